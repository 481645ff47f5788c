"""The built-in REST executor: its address policy (addresses.py), its input checks (inputs.py),
its guarded transport (transport.py) and the executor itself (executor.py)."""

from apflow_server.execution.rest.executor import RestExecutor, rest_executor

__all__ = ["RestExecutor", "rest_executor"]
