// Host emulation: the bf16/f16 types and conversions live in evt_emu.h.
#pragma once
#include "evt_emu.h"
