"""Ray clusters orch runs on: the embedded local cluster of several raylets, or a remote one."""
