"""The Hugging Face Hub, through huggingface_hub: a pretrained folder's model card, pushing the
folder to a repository, and loading a model by its Hub id.

* :func:`model_card`: the ``README.md`` a pretrained folder carries
  (:class:`huggingface_hub.ModelCard`): metadata the Hub indexes (``library_name: clipfuse``,
  tags, license, datasets, the metrics as ``model-index`` results) and a body with how to use
  it, its classes, its results, a summary of its config and the command that trains it;
* :func:`save_folder`: what ``save_pretrained`` does (``ClipfuseModel`` and ``Segmentor``): the
  folder with its card, written atomically, then pushed when asked;
* :func:`push`: ``HfApi.create_repo(exist_ok=True)`` then ``upload_folder`` of the three files
  (:data:`HUB_FILES`);
* :func:`download`: ``snapshot_download`` of those files into the hub cache (``HF_HOME``, as
  every huggingface_hub download), which works offline from the cache (``HF_HUB_OFFLINE=1``).

huggingface_hub is imported only when one of them runs. Every failure is a one-line
:class:`~clipfuse.errors.ClipfuseError`.
"""

import json
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from clipfuse.errors import ClipfuseError, announce, one_line
from clipfuse.saved_model import (
    CARD_FILE,
    CONFIG_FILE,
    PRETRAINED_FORMAT,
    WEIGHTS_FILE,
    write_pretrained,
)

HUB_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)  # what is pushed and downloaded
LICENSE = "apache-2.0"  # pyproject's license: the code that defines and trains the model
# Metric names of metrics.json (clipfuse.evaluation.results_to_json) -> model-index types.
METRIC_TYPES = {"mIoU": "mean_iou", "mAcc": "mean_accuracy", "aAcc": "accuracy"}
MetricsArg = Mapping[str, Any] | str | os.PathLike | None
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_repo_id(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a Hub model (``owner/name``) rather than a local file: a string
    of that form that is not an existing path."""
    if not isinstance(path, str) or not _REPO_ID.fullmatch(path) or Path(path).exists():
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(path)
    except HFValidationError:
        return False
    return True


# -- the model card ------------------------------------------------------------------------------


def read_metrics(metrics: MetricsArg) -> dict[str, Any]:
    """``metrics`` as a dict: a mapping (``{"mIoU": 71.3}``), or the path of a ``metrics.json``
    that ``clipfuse train`` / ``clipfuse eval`` wrote (``mIoU``, ``mAcc``, ``aAcc`` in
    percent, ``per_class``, ``step``); None gives ``{}``."""
    if metrics is None:
        return {}
    if isinstance(metrics, str | os.PathLike):
        path = Path(metrics)
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ClipfuseError(
                f"metrics {path} could not be read as JSON ({one_line(error)}): expected the "
                "metrics.json of clipfuse train or eval, or a dict such as {'mIoU': 71.3}"
            ) from error
    if not isinstance(metrics, Mapping):
        raise ClipfuseError(f"metrics: expected a dict such as {{'mIoU': 71.3}}, got {metrics!r}")
    return dict(metrics)


def _scores(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics (``per_class``, ``step`` and ``confusion`` aside); a one-line error
    for a value that is not a number."""
    scores = {}
    for name, value in metrics.items():
        if name in ("per_class", "step", "confusion") or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ClipfuseError(f"metrics: {name} is {value!r}, expected a number")
        scores[str(name)] = float(value)
    return scores


def model_card(
    meta: dict,
    metrics: MetricsArg = None,
    dataset: str | None = None,
    repo_id: str | None = None,
):
    """The :class:`huggingface_hub.ModelCard` of the pretrained folder whose ``config.json`` is
    ``meta`` (:func:`clipfuse.saved_model.pretrained_config`). ``metrics``: see
    :func:`read_metrics`, each number one ``EvalResult`` on ``dataset`` (default: the
    config's ``data.dataset``) and a row of the card's results table; ``repo_id`` names the
    model in the card (default: method_backbone)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    values = read_metrics(metrics)
    scores = _scores(values)
    config = meta["config"]
    dataset = dataset or config["data"]["dataset"]
    name = repo_id or f"{meta['method']}_{meta['backbone']}"
    results = [
        EvalResult(
            task_type="image-segmentation",
            task_name="Semantic segmentation",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=config["data"]["eval_split"],
            metric_type=METRIC_TYPES.get(metric, metric),
            metric_name=metric,
            metric_value=value,
        )
        for metric, value in scores.items()
    ]
    data = ModelCardData(
        library_name="clipfuse",
        license=LICENSE,
        pipeline_tag="image-segmentation",
        tags=["semantic-segmentation", "clipfuse", meta["method"], meta["backbone"]],
        datasets=[dataset],
        metrics=[METRIC_TYPES.get(metric, metric) for metric in scores] or None,
        model_name=name,
        eval_results=results or None,
    )
    body = _card_body(meta, name, dataset, scores, values)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _card_body(meta: dict, name: str, dataset: str, scores: dict[str, float], metrics: dict) -> str:
    """The card's text below its metadata: usage, classes, results, config, training."""
    config = meta["config"]
    model, data, train = config["model"], config["data"], config["train"]
    classes = ", ".join(f"`{c}`" for c in meta["class_names"])
    lines = [
        f"# {name}",
        "",
        f"A **{meta['method']}** semantic segmentation model ({meta['backbone']} backbone, "
        f"{meta['decoder']} decoder) trained with clipfuse on **{dataset}**.",
        "",
        "## Usage",
        "",
        "```python",
        "import clipfuse",
        "",
        f'model = clipfuse.load("{name}")  # downloaded once into the Hugging Face cache',
        'prediction = model.predict("image.jpg")  # .label_map, .class_names, .scores',
        "```",
        "",
        f"or `clipfuse predict image.jpg --model {name}`.",
        "",
        f"## Classes ({len(meta['class_names'])})",
        "",
        classes,
        "",
    ]
    if scores:
        step = metrics.get("step")
        where = f"{dataset} {data['eval_split']} split" + (f", step {step}" if step else "")
        lines += ["## Results", "", f"On the {where}:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {metric} | {value:.2f} |" for metric, value in scores.items()]
        per_class = [row for row in metrics.get("per_class") or [] if row.get("IoU") is not None]
        if per_class:
            lines += ["", "| class | IoU |", "|---|---|"]
            lines += [f"| {row['name']} | {row['IoU']:.2f} |" for row in per_class]
        lines.append("")
    summary = {
        "method": model["method"],
        "backbone": model["backbone"],
        "decoder": model["decoder"],
        "text encoder": meta["text"]["encoder"],
        "prompt template": meta["text"]["template"],
        "crop size": "x".join(map(str, data["crop_size"])),
        "batch size": data["batch_size"],
        "steps": train["max_steps"],
        "optimizer": f"{train['optimizer']}, lr {train['lr']}",
        "seed": config["seed"],
    }
    lines += ["## Configuration", "", "| | |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in summary.items()]
    lines += [
        "",
        "## Training",
        "",
        "The full run config is the `config` entry of `config.json`; saved as `config.yaml` "
        "(below), `clipfuse train --config config.yaml --out run` trains this model again.",
        "",
        "<details><summary>config.yaml</summary>",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).rstrip(),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


# -- saving, pushing and downloading ---------------------------------------------------------------------


def save_folder(
    directory: str | os.PathLike,
    state: dict,
    meta: dict,
    *,
    push_to_hub: bool = False,
    repo_id: str | None = None,
    metrics: MetricsArg = None,
    dataset: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> Path:
    """Write the pretrained folder ``directory``: ``state`` (a ``state_dict``) as
    ``model.safetensors``, ``meta`` (:func:`~clipfuse.saved_model.pretrained_config`) as
    ``config.json`` and its :func:`model_card` (``metrics``, ``dataset``) as ``README.md``
    (replacing one there: the card describes the model saved with it), in
    one atomic save (:func:`~clipfuse.saved_model.write_pretrained`); then, with
    ``push_to_hub``, :func:`push` them to ``repo_id`` (default: the folder's name in the
    token's namespace, as huggingface_hub's ``ModelHubMixin`` does) with ``private``,
    ``token`` and ``commit_message``. Returns the folder."""
    if push_to_hub and repo_id is None:
        repo_id = Path(directory).resolve().name
        announce(f"push_to_hub without repo_id: pushing to {repo_id!r} in the token's namespace")
    card = model_card(meta, metrics, dataset, repo_id)  # bad metrics: refused before writing
    directory = write_pretrained(directory, state, meta, card=str(card))
    if push_to_hub:
        push(directory, repo_id, private=private, token=token, commit_message=commit_message)
    return directory


def push(
    directory: Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload the pretrained folder ``directory`` (only :data:`HUB_FILES`) to the model
    repository ``repo_id`` on the Hub (``HF_ENDPOINT``), created when absent (``private``:
    its visibility then); the commit's URL. ``token``: default the logged-in one
    (``hf auth login``, ``HF_TOKEN``)."""
    from huggingface_hub import HfApi

    import clipfuse

    api = HfApi(token=token, library_name="clipfuse", library_version=clipfuse.__version__)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=directory,
            allow_patterns=list(HUB_FILES),
            commit_message=commit_message or f"Upload {repo.repo_id} with clipfuse",
        )
    except Exception as error:  # the hub's HTTP errors, no network, offline mode
        raise ClipfuseError(
            f"push of {directory} to the Hugging Face Hub repository {repo_id} failed: "
            f"{type(error).__name__}: {one_line(error)}"
        ) from error
    return commit.commit_url


def download(repo_id: str, revision: str | None = None) -> Path:
    """The local folder (in the hub cache) of the clipfuse model ``repo_id`` at ``revision``
    (a branch, tag or commit; default ``main``): its :data:`HUB_FILES` downloaded once, read
    from the cache after (also with ``HF_HUB_OFFLINE=1``)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    import clipfuse

    at = f" at revision {revision}" if revision else ""
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=list(HUB_FILES),
            library_name="clipfuse",
            library_version=clipfuse.__version__,
        )
    except RepositoryNotFoundError as error:
        raise ClipfuseError(
            f"model {repo_id} not found: no such local path, and no model repository {repo_id} "
            f"on the Hugging Face Hub ({constants.ENDPOINT}), or it is private or gated (log in "
            "with `hf auth login` or set HF_TOKEN)"
        ) from error
    except RevisionNotFoundError as error:
        raise ClipfuseError(f"model {repo_id} has no revision {revision!r} on the Hub") from error
    except LocalEntryNotFoundError as error:
        why = (
            "HF_HUB_OFFLINE is set"
            if constants.HF_HUB_OFFLINE
            else f"the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached"
        )
        raise ClipfuseError(
            f"model {repo_id}{at}: no such local path, and as a Hub id it is not in the hub "
            f"cache ({constants.HF_HUB_CACHE}) while {why}: check the path, or download it "
            "once while online"
        ) from error
    except HfHubHTTPError as error:
        raise ClipfuseError(f"model {repo_id}{at}: the Hub refused: {one_line(error)}") from error
    folder = Path(folder)
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != PRETRAINED_FORMAT:
        raise ClipfuseError(
            f"Hub repository {repo_id}{at} is not a clipfuse model: expected {CONFIG_FILE} "
            f"(format {PRETRAINED_FORMAT!r}) and {WEIGHTS_FILE} pushed by save_pretrained"
        )
    return folder
