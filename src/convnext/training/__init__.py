"""Training and evaluation: recipes as data per task (each field with its valid range), datasets and transforms,
optimizer groups and schedules, the trainer with resumable checkpoints, DDP, metrics and reports, and
rerunning the roadmap's steps.

May import the runtime, models and checkpoints layers, never deploy or the commands.
"""
