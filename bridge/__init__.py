"""The MCP bridge: the executor's tools for MCP clients and for the workers themselves.

- :mod:`bridge.models`: what each tool returns (pydantic, so clients get schemas);
- :mod:`bridge.tools`: the tools, each one protocol message to the right actor;
- :mod:`bridge.auth`: the bearer tokens and the HTTP guard;
- :mod:`bridge.panic`: the switch that refuses every mutating tool;
- :mod:`bridge.http`: streamable HTTP on a thread of its own.
"""
