"""The MCP bridge: the executor's tools for MCP clients and for the workers themselves.

- :mod:`bridge.models`: what each tool returns (pydantic, so clients get schemas);
- :mod:`bridge.tools`: the tools, each one protocol message to the right actor;
- :mod:`bridge.auth`: the bearer tokens and the HTTP guard;
- :mod:`bridge.panic`: the switch that refuses every mutating tool;
- :mod:`bridge.http`: the HTTP server (uvicorn) on a bound socket;
- :mod:`bridge.host` (in the run) and :mod:`bridge.remote` (in the bridge process): ``--http``
  served from a process of its own, its asks to the actors carried over :mod:`bridge.channel`.
"""
