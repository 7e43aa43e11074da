"""The client: keystore, session, evidence store, verifier and watchtower."""
