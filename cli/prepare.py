"""`pyro-adgm prepare ...`: turn a data source into the prepared-dataset format, once."""

from __future__ import annotations

import click

from cli.errors import one_line_errors
from data_tools.demo import DEMO_IMAGE_SIZE, DEMO_N_IMAGES


@click.group()
def prepare():
    """Prepare a data source once into the on-disk format that training reads.

    \b
    Example:
      pyro-adgm prepare demo --out data/demo
    """


@prepare.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder to write.")
@click.option("--n-images", default=DEMO_N_IMAGES, show_default=True, help="Number of phantoms.")
@click.option("--size", default=DEMO_IMAGE_SIZE, show_default=True, help="Image side in pixels.")
@click.option("--val-fraction", default=0.1, show_default=True)
@click.option("--test-fraction", default=0.1, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even when OUT is already prepared with the same settings.")
@one_line_errors
def prepare_demo(out_dir, n_images, size, val_fraction, test_fraction, seed, force):
    """The built-in procedural phantoms (normal / opacity / not-normal).

    \b
    Example:
      pyro-adgm prepare demo --out data/demo --size 64
    """
    from data_tools.demo import prepare_demo as run

    path, note = run(out_dir, n_images, size, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                     force=force)
    click.echo(note or f"wrote {n_images} images of {size}x{size} to {path}")


def _image_options(command):
    """Options shared by the commands that decode image files (rsna, folder)."""
    options = [
        click.option("--size", default=225, show_default=True, help="Side of the square output images, in pixels."),
        click.option(
            "--square",
            type=click.Choice(["crop", "pad"]),
            default="crop",
            show_default=True,
            help="Non-square images: centre-crop to the shorter side, or pad with black to the longer side.",
        ),
        click.option(
            "--voi-lut/--no-voi-lut", default=False, show_default=True, help="Apply the DICOM VOI LUT or window."
        ),
        click.option("--workers", type=int, default=None, help="Worker processes (default: one per CPU; 0: none)."),
        click.option("--val-fraction", default=0.1, show_default=True, help="Share of patients per class in val."),
        click.option("--test-fraction", default=0.0, show_default=True, help="Share of patients per class in test."),
        click.option("--seed", default=0, show_default=True, help="Seed of the split draw."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _common_options(command):
    options = [
        click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder to write."),
        click.option(
            "--max-failure-fraction",
            default=0.05,
            show_default=True,
            help="Stop when more than this share of the images cannot be used.",
        ),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."),
        click.option(
            "--force", is_flag=True, help="Rebuild even when OUT is already prepared with the same plan (else: no-op)."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _echo_result(result):
    if result.unchanged:
        click.echo(result.note)
        return
    if result.note:
        click.echo(result.note)
    for warning in result.report.get("warnings", []):
        click.echo(f"warning: {warning}")
    click.echo(f"wrote {result.n_images} images to {result.path} ({result.decoded_this_run} decoded in this run)")
    for split in ("train", "val", "test"):
        if split in result.counts:
            classes = ", ".join(f"{name}: {n}" for name, n in sorted(result.counts[split].items()))
            click.echo(f"  {split}: {classes}")
    click.echo(f"{result.n_failed} images left out; report: {result.report_path}")


@prepare.command("rsna")
@click.option("--root", type=click.Path(file_okay=False), help="The Kaggle download folder.")
@click.option("--images", "images_dir", type=click.Path(file_okay=False), help="Default: ROOT/stage_2_train_images.")
@click.option("--labels-csv", type=click.Path(dir_okay=False), help="Default: ROOT/stage_2_train_labels.csv.")
@click.option("--class-csv", type=click.Path(dir_okay=False), help="Default: ROOT/stage_2_detailed_class_info.csv.")
@_image_options
@_common_options
@one_line_errors
def prepare_rsna(root, images_dir, labels_csv, class_csv, size, square, voi_lut, workers, val_fraction, test_fraction,
                 seed, out_dir, max_failure_fraction, progress, force):
    """The RSNA Pneumonia Detection Challenge (Kaggle layout), one image per patient.

    The images may be the Kaggle DICOMs or PNG/JPEG copies of them (the file stem is the patientId). A folder
    mixing formats is reported; a patientId in several files keeps one (DICOM before PNG before JPEG) and lists
    the others as failures. Killed, the same command run again carries on where it stopped.

    \b
    Examples:
      pyro-adgm prepare rsna --root ~/rsna --size 225 --out data/rsna-225 --workers 4
      pyro-adgm prepare rsna --root ../shared/data/rsna-1500 --size 225 --out data/rsna1500-225
    """
    from data_tools.rsna import prepare_rsna as run

    result = run(
        out_dir, root=root, images_dir=images_dir, labels_csv=labels_csv, class_csv=class_csv, size=size,
        square=square, voi_lut=voi_lut, workers=workers, val_fraction=val_fraction, test_fraction=test_fraction,
        seed=seed, max_failure_fraction=max_failure_fraction, progress=progress, force=force,
    )
    _echo_result(result)


@prepare.command("medmnist")
@click.argument("npz_file", type=click.Path(dir_okay=False))
@click.option("--size", type=int, default=None, help="Resize to this side (default: the file's own size).")
@click.option(
    "--class-names", default=None, help="Comma-separated names of labels 0, 1, ... (default: from the file name)."
)
@click.option("--test-from-train", type=click.IntRange(min=0), default=0, show_default=True,
              help="Draw this many training images as the test split, in place of the file's (0: keep the file's).")
@click.option("--seed", default=0, show_default=True, help="Seed of the --test-from-train draw.")
@_common_options
@one_line_errors
def prepare_medmnist(npz_file, size, class_names, test_from_train, seed, out_dir, max_failure_fraction, progress, force):
    """A MedMNIST .npz file, keeping its train/val/test splits.

    With --test-from-train N the test split is N training images drawn at random instead: a test set from the
    training images' distribution, to tell a method's accuracy apart from a shift between the file's splits.

    \b
    Example:
      pyro-adgm prepare medmnist pneumoniamnist_28.npz --out data/pneumoniamnist
      pyro-adgm prepare medmnist pneumoniamnist_28.npz --test-from-train 624 --out data/pneumoniamnist-iid
    """
    from data_tools.medmnist import prepare_medmnist as run

    names = [name.strip() for name in class_names.split(",")] if class_names else None
    result = run(npz_file, out_dir, size=size, class_names=names, test_from_train=test_from_train, seed=seed,
                 max_failure_fraction=max_failure_fraction, progress=progress, force=force)
    _echo_result(result)


@prepare.command("folder")
@click.argument("root", type=click.Path(file_okay=False))
@_image_options
@_common_options
@one_line_errors
def prepare_folder(root, size, square, voi_lut, workers, val_fraction, test_fraction, seed, out_dir,
                   max_failure_fraction, progress, force):
    """A folder with one sub-folder per class of PNG/JPEG/DICOM files (train/, val/, test/ above them kept).

    \b
    Example:
      pyro-adgm prepare folder chest_xray/ --size 225 --out data/kermany-225
    """
    from data_tools.folder import prepare_folder as run

    result = run(
        root, out_dir, size=size, square=square, voi_lut=voi_lut, workers=workers, val_fraction=val_fraction,
        test_fraction=test_fraction, seed=seed, max_failure_fraction=max_failure_fraction, progress=progress,
        force=force,
    )
    _echo_result(result)


@prepare.command("csv")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False), required=True, help="The label CSV.")
@click.option("--images", "images_dir", type=click.Path(file_okay=False), default=None,
              help="The folder the CSV's paths are relative to (default: the CSV's folder).")
@click.option("--layout", type=click.Choice(["plain", "chestx-ray14", "chexpert"]), default="plain", show_default=True,
              help="Column defaults: plain (path,label[,patient][,split][,view]); chestx-ray14 (Data_Entry_2017.csv: "
                   "Image Index, Finding Labels, Patient ID, View Position); chexpert (train.csv/valid.csv: Path, one "
                   "column per finding, the patient from the path, AP/PA).")
@click.option("--path-column", default=None, help="Column of image paths (plain: path).")
@click.option("--suffix", default="", help="Appended to each path that does not end with it, e.g. .png for patientIds.")
@click.option("--label-column", default=None, help="Column of class values (plain: label).")
@click.option("--class", "classes", multiple=True, metavar="NAME=VALUE[,VALUE...]",
              help="Map CSV values to a class; repeat per class; several values merge into one class. "
                   "Default: a class per value. Any other value is an error.")
@click.option("--finding", default=None,
              help="Classify one finding: rows with it (positive) vs without (negative). \"No Finding\": normal vs abnormal.")
@click.option("--findings-column", default=None, help="Column listing findings separated by | (chestx-ray14: Finding Labels).")
@click.option("--uncertain", type=click.Choice(["drop", "positive", "negative"]), default=None,
              help="A finding column's -1 (uncertain) rows: left out, or counted as positive or negative.  [default: drop]")
@click.option("--blank", type=click.Choice(["negative", "drop"]), default=None,
              help="A finding column's blank rows (not mentioned).  [default: negative]")
@click.option("--multi-finding", type=click.Choice(["keep", "drop"]), default=None,
              help="Positive rows with other findings too: kept as positive, or left out.  [default: keep]")
@click.option("--negatives", type=click.Choice(["rest", "no-finding"]), default=None,
              help="Negatives: every row without the finding, or only rows without any finding.  [default: rest]")
@click.option("--patient-column", default=None,
              help="Column of patient ids: splits keep a patient's images together (plain: patient, if present; '' for none).")
@click.option("--patient-pattern", default=None, metavar="REGEX",
              help="Without a patient column: the patient id is this regex's match in the path (chexpert: patient\\d+).")
@click.option("--split-column", default=None,
              help="Column of train/val/test: kept; a split it never names is drawn from train (plain: split, if present).")
@click.option("--view-column", default=None, help="Column of the view, e.g. AP/PA (plain: view, if present).")
@click.option("--where", multiple=True, metavar="COLUMN=VALUE[,VALUE...]",
              help="Keep only rows with one of these values; repeat for several columns (all must hold).")
@_image_options
@_common_options
@one_line_errors
def prepare_csv(csv_file, images_dir, layout, path_column, suffix, label_column, classes, finding, findings_column,
                uncertain, blank, multi_finding, negatives, patient_column, patient_pattern, split_column, view_column,
                where, size, square, voi_lut, workers, val_fraction, test_fraction, seed, out_dir, max_failure_fraction,
                progress, force):  # fmt: skip
    """An image folder and a label CSV: a column of paths, a column of labels (or findings), optionally patients
    and splits. Images missing from the folder are counted and listed in the report.

    \b
    Examples:
      pyro-adgm prepare csv --csv labels.csv --images scans/ --out data/mine-225
      pyro-adgm prepare csv --csv rsna/labels.csv --images rsna/stage_2_train_images --path-column patientId \\
          --suffix .png --label-column class --class normal=Normal \\
          --class abnormal="Lung Opacity,No Lung Opacity / Not Normal" --out data/rsna-2class
      pyro-adgm prepare csv --layout chestx-ray14 --csv Data_Entry_2017.csv --images nih/ --finding Effusion \\
          --multi-finding drop --out data/cxr14-effusion
      pyro-adgm prepare csv --layout chexpert --csv CheXpert-v1.0-small/train.csv --finding "Pleural Effusion" \\
          --uncertain drop --where Frontal/Lateral=Frontal --out data/chexpert-effusion
    """
    from data_tools.csv_labels import parse_class_options
    from data_tools.csv_source import CsvSpec, parse_where
    from data_tools.csv_source import prepare_csv as run

    spec = CsvSpec(
        layout=layout, path_column=path_column, suffix=suffix, label_column=label_column,
        classes=parse_class_options(classes), finding=finding, findings_column=findings_column, uncertain=uncertain,
        blank=blank, multi_finding=multi_finding, negatives=negatives, patient_column=patient_column,
        patient_pattern=patient_pattern, split_column=split_column, view_column=view_column, where=parse_where(where),
    )
    result = run(
        csv_file, out_dir, spec, images=images_dir, size=size, square=square, voi_lut=voi_lut, workers=workers,
        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, max_failure_fraction=max_failure_fraction,
        progress=progress, force=force,
    )
    _echo_result(result)
