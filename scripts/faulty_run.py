"""Run a `convnext` command and hurt it at a chosen moment, as a crash or an operator would.

    python scripts/faulty_run.py --at-step 5 --signal KILL -- train --epochs 2 ...
    python scripts/faulty_run.py --in-checkpoint 2 -- pretrain ...     # SIGKILL halfway through writing it
    python scripts/faulty_run.py --after 3.5 --signal KILL -- detect train ...
    python scripts/faulty_run.py --before-final -- train --resume RUN       # SIGKILL before the final files

`--at-step N` delivers the signal to this process right after the N-th optimizer step of this
invocation (a global optimizer hook: mid-step, before the schedule and the EMA move), `--after S`
after S seconds of wall time, `--in-checkpoint N` while the N-th training checkpoint is being
written: half of its bytes are on disk when the process dies, `--before-final` with SIGKILL when the
run, its steps and checkpoints done, is about to write its final files (weights, summary). The tests
resume what is left.
"""
import argparse
import os
import signal
import sys
import threading


def hurt(signum: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signum)
    if signum != signal.SIGKILL:
        return
    threading.Event().wait()  # SIGKILL is not delivered synchronously everywhere: never run on


def main() -> None:
    parser = argparse.ArgumentParser()
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--at-step", type=int)
    when.add_argument("--after", type=float)
    when.add_argument("--in-checkpoint", type=int)
    when.add_argument("--before-final", action="store_true")
    parser.add_argument("--signal", default="KILL", choices=["KILL", "TERM", "INT"])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    signum = signal.Signals[f"SIG{args.signal}"]
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    if args.at_step is not None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        steps = [0]

        def after_step(optimizer, *_):
            steps[0] += 1
            if steps[0] == args.at_step:
                hurt(signum)

        register_optimizer_step_post_hook(after_step)
    elif args.after is not None:
        threading.Timer(args.after, hurt, (signum,)).start()
    elif args.before_final:
        from convnext.training import loop

        loop.Loop.finish = lambda self, wall_s: hurt(signal.SIGKILL)
    else:
        import torch

        from convnext.training import run_state

        saves = [0]
        real_save = torch.save

        def torn_save(obj, file, *more, **options):
            real_save(obj, file, *more, **options)
            saves[0] += 1
            if saves[0] == args.in_checkpoint:
                file.flush()
                os.truncate(file.fileno(), os.fstat(file.fileno()).st_size // 2)
                hurt(signal.SIGKILL)

        # Only the checkpoint writer's torch.save is torn: run_state sees a torch whose save is.
        run_state.torch = type(sys)("torch_with_a_torn_save")
        run_state.torch.__dict__.update({**torch.__dict__, "save": torn_save})

    from convnext.cli import main as convnext

    code = convnext(command)
    os._exit(code)  # a timer thread must not keep the process alive


if __name__ == "__main__":
    main()
