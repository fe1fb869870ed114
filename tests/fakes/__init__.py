"""Fakes of the external systems no unit test can run for real (named as such)."""
