"""Local stand-ins for cloud services, for tests that must run without a Google account or network."""
