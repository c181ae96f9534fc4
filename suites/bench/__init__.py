"""``ssm-metarl bench``: timing sweeps and the project's speed targets.

Files: args.py (the command's arguments; light, so that building the CLI parser imports no
torch), targets.py (the sweeps through the runner, and each speed target as one interleaved
measurement with PASS / FAIL). Imports: everything below the CLI (protocols, runner, report).
"""
