"""Replicas of the service behind one endpoint, on Ray Serve rather than a balancer of our own.

    serve run convnext.deploy.serving.replicas:build weights=runs/r num_replicas=2 num_cpus=1
    # or, from Python:
    serve.run(replicas.application("runs/r", num_replicas=2, num_cpus=1.0), route_prefix="/")

Each replica is a Ray actor whose ingress is the same Starlette app `convnext serve` runs (`create_app`:
its batcher, limits, errors, metrics, keys, the `/v1` and Open Inference Protocol routes); Ray's proxy
spreads requests over the replicas. The key comes from `api_key=` or CONVNEXT_API_KEY on the machine
that deploys, and travels to the replicas with the application. A replica runs PyTorch on as many
threads as the CPUs it is given (at least one), so that two replicas on two cores do not each spin two.
"""
import os

KEY_VARIABLE = "CONVNEXT_API_KEY"


def _service(weights: str, model_name: str | None, backend: str, settings, api_key: str | None, threads: int):
    """Built on each replica (Ray calls it there): the model and the app around it."""
    import torch

    from ...checkpoints.weights import load_pretrained, load_weights
    from ..predictor import Predictor
    from .app import create_app

    torch.set_num_threads(threads)
    model = load_weights(model_name, weights) if model_name else load_pretrained(weights)
    name = getattr(model, "model_name", None) or "convnext"
    return create_app(Predictor(model.eval(), backend=backend), settings, name, api_key)


def application(weights: str, num_replicas: int = 1, num_cpus: float = 1.0, model_name: str | None = None,
                backend: str = "pytorch", settings=None, api_key: str | None = None):
    """A Ray Serve application: `num_replicas` copies of the service, `num_cpus` CPUs each (fractions allowed)."""
    from ray import serve

    from .app import Settings

    if num_replicas < 1 or num_cpus <= 0:
        raise ValueError(f"num_replicas must be >= 1 and num_cpus > 0, got {num_replicas} and {num_cpus}")
    settings, api_key = settings or Settings(), api_key or os.environ.get(KEY_VARIABLE) or None

    def build_app():  # Ray takes a function of no arguments as an ASGI app's builder, run on each replica
        return _service(str(weights), model_name, backend, settings, api_key, max(1, int(num_cpus)))

    ingress = serve.ingress(build_app)()  # a deployment class whose HTTP handling is our ASGI app
    deployment = serve.deployment(ingress, name="convnext", num_replicas=num_replicas,
                                  ray_actor_options={"num_cpus": num_cpus},
                                  max_ongoing_requests=4 * settings.queue_size)
    return deployment.bind()


def build(args: dict):
    """For `serve run convnext.deploy.serving.replicas:build weights=... [num_replicas=2] [num_cpus=1]
    [model=NAME] [backend=onnxruntime] [max_batch_size=8] ...` (values arrive as strings)."""
    from .app import Settings

    args = dict(args)
    if "weights" not in args:
        raise ValueError("give weights=PATH (a run directory, our file or any converted format)")
    fields = {name: type(getattr(Settings(), name))(args.pop(name)) for name in list(args)
              if name in Settings.__dataclass_fields__}
    return application(args.pop("weights"), int(args.pop("num_replicas", 1)), float(args.pop("num_cpus", 1)),
                       args.pop("model", None), args.pop("backend", "pytorch"), Settings(**fields),
                       args.pop("api_key", None))
