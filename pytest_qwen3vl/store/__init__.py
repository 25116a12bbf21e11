"""Storing what is expensive to make: the content-addressed, verified cache that workers and runs share."""
