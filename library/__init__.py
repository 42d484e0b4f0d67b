"""evtdsl's standard library, written in the DSL (imported as ``evtdsl.library``)."""
