"""Shared test configuration: the suite runs pytest inside pytest with ``pytester``."""
