"""Test doubles the tests and the demo run against: a Hub-compatible server, an image server with hostile
hosts, the synthetic image/caption domain, a Common Crawl WAT writer and random embedding sets.

They are real servers and real files on loopback, not mocks: the clients under test are the real ones.
"""
