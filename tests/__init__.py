"""The tests: unit/ needs nothing, integration/ runs against real parts, support/ is shared."""
