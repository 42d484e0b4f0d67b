"""Example megakernels, used by ``evtdsl demo``, the tests and the tutorials."""
