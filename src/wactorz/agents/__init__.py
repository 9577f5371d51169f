"""Ready-made actors: the LLM chat agent, the router, the monitor, and sandboxed runners."""
