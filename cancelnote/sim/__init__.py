"""The simulation lab: a deterministic discrete-event kernel driving the real engine."""
