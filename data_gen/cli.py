"""`dermvqa data ...`: QA synthesis and LLaVA-JSON export (heavy imports stay inside the commands)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from chat_endpoint import options as endpoint_options

# `data teach --endpoint` defaults: long conversations from large models want more patience than eval's answers
TEACH_TIMEOUT_S, TEACH_RETRIES, TEACH_TEMPERATURE = 120.0, 6, 0.2

data_app = typer.Typer(help="Derm1M-format CSV + ontology -> QA records; exports.", no_args_is_help=True)


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"--shard must look like I/N (e.g. 0/4), got {text!r}")
    if not (n >= 1 and 0 <= i < n):
        raise typer.BadParameter(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


@data_app.command("synth")
def synth(csv: Path = typer.Option(..., help="Derm1M-format CSV (Derm1M_v2_pretrain.csv or a synthetic world)"),
          ontology: Path = typer.Option(..., help="Derm1M ontology.json (flat: node name -> list of children)"),
          out: Path = typer.Option(..., help="output folder: qa/<split>/part-*.parquet, report.json, report.md"),
          images: Optional[Path] = typer.Option(None, help="image root; enables the perceptual-hash split"),
          tree: Optional[Path] = typer.Option(None, help="nested ontology tree JSON (splits benign/malignant keys)"),
          concept_terms: Optional[Path] = typer.Option(None, help="ConceptTerms.json synonym groups"),
          seed: int = typer.Option(0, help="seed for paraphrases, options and the split"),
          shard: str = typer.Option("0/1", help="I/N: process parts k with k % N == I"),
          families: Optional[list[str]] = typer.Option(None, "--families",
                                                       help="families to make, repeated or comma-separated "
                                                            "(default all)"),
          test_fraction: float = typer.Option(0.2, help="share of images in the test split"),
          val_fraction: float = typer.Option(0.0, help="share of images in a validation split, taken from train "
                                                       "(for `dermvqa alert-fit`; the test split stays the same)"),
          chunk_rows: int = typer.Option(10_000, help="rows per part (the unit of resume)"),
          strict: bool = typer.Option(False, help="stop at the first bad row instead of counting it"),
          overwrite: bool = typer.Option(False, help="delete an earlier run in --out made with other settings"),
          encoding: str = typer.Option("utf-8", help="CSV text encoding")):
    """Synthesize QA records (resumable: rerun the same command to continue a killed run)."""
    from data_gen.synth import synthesize

    families = [f.strip() for item in families or [] for f in item.split(",") if f.strip()] or None
    synthesize(csv, ontology, out, images_dir=images, seed=seed, families=families, shard=_shard(shard),
               test_fraction=test_fraction, val_fraction=val_fraction, tree_path=tree, concept_terms_path=concept_terms,
               chunk_rows=chunk_rows, strict=strict, encoding=encoding, overwrite=overwrite)


@data_app.command("export-llava")
def export_llava(qa: Path = typer.Option(..., help="folder with QA parquet shards (e.g. OUT/qa)"),
                 out: Path = typer.Option(..., help="JSON file to write"),
                 split: Optional[str] = typer.Option(None, help="only this split (train/test)"),
                 families: Optional[list[str]] = typer.Option(None, "--families", help="only these families"),
                 group_by_image: bool = typer.Option(True, help="one conversation per image with all its turns")):
    """Write LLaVA-style conversation JSON from QA parquet shards."""
    from data_gen.export_llava import export

    n = export(qa, out, split=split, families=families, group_by_image=group_by_image)
    typer.echo(f"wrote {n} conversations to {out}")


@data_app.command("export-preference")
def export_preference(qa: Path = typer.Option(..., help="folder with QA parquet shards (e.g. OUT/qa)"),
                      out: Path = typer.Option(..., help="JSON-lines file of preference pairs (TRL format); "
                                                         "the counts go to <name>.report.json beside it")):
    """Preference pairs (prompt / chosen / rejected + image) from the train split for stage-3 DPO."""
    from data_gen.preference import export_preference as run_export, report_path

    report = run_export(qa, out)
    typer.echo(f"wrote {report['pairs']} preference pairs from {report['train_records']} train records to {out} "
               f"(by rule {report['by_rule']}; {sum(report['skipped'].values())} records made none, reasons in "
               f"{report_path(out)})")


@data_app.command("teach")
def teach(qa: Path = typer.Option(..., help="folder with QA parquet shards (e.g. OUT/qa)"),
          csv: Path = typer.Option(..., help="the CSV the records came from (captions = hidden context)"),
          model: str = typer.Option(..., help="with --endpoint: the model name the endpoint serves; "
                                              "without: local path or hub id of a transformers chat model"),
          out: Path = typer.Option(..., help="folder for teacher records (resumable: rerun the same command)"),
          endpoint: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL (vLLM, SGLang, TGI, "
                                                            "llama.cpp, a hosted API), e.g. http://host:8000/v1"),
          api_key_env: Optional[str] = endpoint_options.api_key_env_option("endpoint"),
          concurrency: int = typer.Option(8, min=1, help="endpoint: requests in flight at once"),
          ontology: Optional[Path] = typer.Option(None, help="endpoint: ontology.json, so disease names in answers "
                                                             "('fixed drug eruption') are not read as treatment or "
                                                             "age words (without it the gate is stricter)"),
          images: Optional[Path] = typer.Option(None, help="endpoint: image root; each request then carries the "
                                                           "image (for a vision teacher)"),
          timeout: Optional[float] = endpoint_options.timeout_option("endpoint", TEACH_TIMEOUT_S),
          retries: Optional[int] = endpoint_options.retries_option("endpoint", TEACH_RETRIES),
          temperature: Optional[float] = typer.Option(None, help=f"endpoint: sampling temperature (default "
                                                                 f"{TEACH_TEMPERATURE:g})"),
          no_temperature: bool = endpoint_options.no_temperature_option("endpoint"),
          max_tokens: int = typer.Option(768, min=1, help="endpoint: most tokens per reply"),
          max_tokens_param: Optional[str] = endpoint_options.max_tokens_param_option("endpoint", "--max-tokens"),
          extra_body: Optional[str] = endpoint_options.extra_body_option("endpoint"),
          device: Optional[str] = typer.Option(None, help="local model: cuda / cpu (default: cuda when available)"),
          limit: Optional[int] = typer.Option(None, help="at most this many images"),
          batch_size: int = typer.Option(8, help="local model: prompts per generate call"),
          max_new_tokens: int = typer.Option(96, help="local model: tokens per teacher reply"),
          trust_remote_code: bool = typer.Option(False, help="local model: only for models you trust")):
    """Optional LLM teacher behind the leak filter: through an OpenAI-compatible --endpoint, multi-turn
    conversations at corpus scale; without it, a local model paraphrases and adds free-form turns (small runs)."""
    if endpoint is None:
        given = [flag for flag, value in (("--api-key-env", api_key_env), ("--timeout", timeout),
                                          ("--retries", retries is not None),
                                          ("--temperature", temperature is not None),
                                          ("--no-temperature", no_temperature),
                                          ("--max-tokens-param", max_tokens_param), ("--extra-body", extra_body))
                 if value]
        if given:
            raise typer.BadParameter(f"{', '.join(given)}: only for --endpoint runs")
        from data_gen.teacher import Teacher, teach as run_teach

        teacher = Teacher.from_pretrained(model, device=device, trust_remote_code=trust_remote_code,
                                          max_new_tokens=max_new_tokens)
        report = run_teach(qa, csv, out, teacher, batch_size=batch_size, limit=limit)
        typer.echo(f"kept {report['kept']} teacher records; rejected: "
                   f"{ {k: v['count'] for k, v in report['rejections'].items()} }")
        return
    from chat_endpoint.endpoint import Endpoint
    from data_gen.teacher_endpoint import teach_endpoint

    if temperature is not None and no_temperature:
        raise typer.BadParameter("--temperature and --no-temperature contradict each other")
    ep = Endpoint(endpoint, model, api_key_env, TEACH_TIMEOUT_S if timeout is None else timeout,
                  TEACH_RETRIES if retries is None else retries)
    request = endpoint_options.request_options(max_tokens_param, None if no_temperature else
                                               TEACH_TEMPERATURE if temperature is None else temperature, extra_body)
    report = teach_endpoint(qa, csv, ontology, out, ep, request=request, max_tokens=max_tokens,
                            concurrency=concurrency, images_dir=images, limit=limit)
    typer.echo(f"[data teach] rows {report['rows']}: answered now {report['answered']} "
               f"({report['rows_per_s']} rows/s), cached {report['cached']}, failed {report['failed']}; "
               f"kept {report['kept']} conversations, rejected {report['rejected']}; report at {out / 'report.md'}")
    for reason, info in report["failures"].items():
        typer.echo(f"{reason}: {info['count']} rows, first {info['examples'][0]}", err=True)
    if report["failed"]:
        typer.echo(f"error: {report['failed']} rows got no answer (reasons above and in {out / 'report.md'}); "
                   "rerun the same command to ask them again", err=True)
        raise typer.Exit(1)


import_app = typer.Typer(help="Classification datasets -> the Derm1M-format CSV `data synth` reads.",
                         no_args_is_help=True)
data_app.add_typer(import_app, name="import")
_METADATA = typer.Option(..., help="the dataset's metadata CSV")
_IMAGES = typer.Option(..., help="image folder (searched recursively by file name)")
_OUT = typer.Option(..., help="output folder: derm1m.csv, ontology.json, import_report.md/.json, skipped.csv")
_SPLIT = typer.Option(None, help="CSV with image_id (or img_id / image_path) and split train/val/test: "
                                 "kept as given; without it the split is by lesion / patient id")
_ONTOLOGY = typer.Option(None, help="Derm1M ontology.json: checks the label mapping against it")
_TREE = typer.Option(None, help="nested ontology tree JSON (splits the benign/malignant copies)")
_STRICT = typer.Option(False, help="stop at the first bad row instead of counting it as skipped")
_SEED = typer.Option(0, help="seed of the fallback split")
_TEST_FRACTION = typer.Option(0.2, help="test share of the fallback split")
_VAL_FRACTION = typer.Option(0.0, help="validation share of the fallback split, taken from train")


def _run_import(fn, ontology: Optional[Path], tree: Optional[Path], **kw) -> None:
    """Load the ontology if given and run the importer (a bad file ends as one `error:` line, exit 2)."""
    from data_gen.ontology import Ontology

    fn(ontology=Ontology.load(ontology, tree) if ontology else None, **kw)


@import_app.command("ham10000")
def import_ham(metadata: Path = _METADATA, images: Path = _IMAGES, out: Path = _OUT,
               split_file: Optional[Path] = _SPLIT, ontology: Optional[Path] = _ONTOLOGY,
               tree: Optional[Path] = _TREE, strict: bool = _STRICT, seed: int = _SEED,
               test_fraction: float = _TEST_FRACTION, val_fraction: float = _VAL_FRACTION):
    """HAM10000_metadata.csv (+ the DermaMNIST split file) -> Derm1M format; 7 dx codes -> ontology nodes."""
    from data_gen.importers.ham10000 import import_ham10000

    _run_import(import_ham10000, ontology, tree, metadata=metadata, images=images, out=out, split_file=split_file,
                strict=strict, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction)


@import_app.command("pad-ufes-20")
def import_pad(metadata: Path = _METADATA, images: Path = _IMAGES, out: Path = _OUT,
               split_file: Optional[Path] = _SPLIT, ontology: Optional[Path] = _ONTOLOGY,
               tree: Optional[Path] = _TREE, strict: bool = _STRICT, seed: int = _SEED,
               test_fraction: float = _TEST_FRACTION, val_fraction: float = _VAL_FRACTION):
    """PAD-UFES-20 metadata.csv -> Derm1M format with real Fitzpatrick skin types; split by patient."""
    from data_gen.importers.pad_ufes_20 import import_pad_ufes_20

    _run_import(import_pad_ufes_20, ontology, tree, metadata=metadata, images=images, out=out,
                split_file=split_file, strict=strict, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction)


@import_app.command("fitzpatrick17k")
def import_f17k(metadata: Path = _METADATA, images: Path = _IMAGES, out: Path = _OUT,
                ontology: Path = typer.Option(..., help="Derm1M ontology.json: the 114 labels resolve against it"),
                split_file: Optional[Path] = _SPLIT, tree: Optional[Path] = _TREE, strict: bool = _STRICT,
                seed: int = _SEED, test_fraction: float = _TEST_FRACTION, val_fraction: float = _VAL_FRACTION):
    """fitzpatrick17k.csv -> Derm1M format; rows whose <md5hash>.jpg is not under --images are listed as skipped."""
    from data_gen.importers.fitzpatrick17k import import_fitzpatrick17k

    _run_import(import_fitzpatrick17k, ontology, tree, metadata=metadata, images=images, out=out,
                split_file=split_file, strict=strict, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction)
