"""Upload one large checkpoint shard to S3 (a stand-in for a rank saving), to be killed mid-upload."""

import os
import sys

from orchestrator.checkpoint.objects import S3ObjectStore
from orchestrator.checkpoint.store import CheckpointStore

bucket, prefix, step, megabytes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
objects = S3ObjectStore(bucket, prefix, chunk_mb=5, concurrency=2)
CheckpointStore(objects, prefix).put_shard(step, 0, os.urandom(megabytes * 1024 * 1024))
