"""The operator: a sans-I/O engine, its durable journal, the WebSocket server, policies."""
