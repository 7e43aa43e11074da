"""Compiled contract artifacts (ABI, bytecode, source hash), shipped as package data."""
