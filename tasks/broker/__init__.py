"""The worker's side of the broker: the pool that starts the most urgent held job first
(band_pool.py, quorum queues), and delayed delivery set up through one cluster node."""
