"""`orch simulate`: the whole run replayed on simulated time against a simulated cluster, driving
the real controller, scheduler, checkpoint interval policy and ledger."""
