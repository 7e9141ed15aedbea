"""`orch data prepare`: turn text files into token shards for `data: {source: shards}`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare training data")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    p = data_sub.add_parser("prepare", help="tokenize text files (UTF-8 bytes) into memory-mappable shards")
    p.add_argument("inputs", nargs="+", help="text files")
    p.add_argument("--out", required=True, help="output folder (empty)")
    p.add_argument("--shard-tokens", type=int, default=1 << 24, help="tokens per shard file")
    p.add_argument("--dtype", choices=["uint16", "uint32"], default="uint16", help="token dtype of the shards")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from orchestrator.train.prepare import prepare_shards

    manifest = prepare_shards(args.inputs, args.out, args.shard_tokens, args.dtype)
    print(f"wrote {manifest['tokens']:,} tokens in {len(manifest['shards'])} shard(s) to {args.out}")
    print(f"use it with: --set data='{{source: shards, path: {args.out}, dtype: {args.dtype}}}'")
    return 0
