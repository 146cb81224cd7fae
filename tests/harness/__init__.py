"""The test harness: real binaries started as local processes on loopback ports."""
