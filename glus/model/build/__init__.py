"""Builders: the objects recipes name to make a GLUS (tiny in code, or full-size from LISA's folder)."""
