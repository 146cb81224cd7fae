"""The chaos agent every service runs: bounded CPU and memory stress that undoes itself.

Modules: `workers` (the threads and memory that do the stressing), `engine` (which stress each
experiment holds, budgets, expiry), `requests` (validation of the gRPC messages), `agent` (the
ChaosAgentService servicer and its registration on a service's gRPC server).
"""
