"""The chain (in-process py-evm or JSON-RPC) and the binding of the court contract."""
