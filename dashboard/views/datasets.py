"""Datasets: what is registered (class counts, sample images, sizes, mean/std) and registering a new one.

Registering goes through control.dataset_registry, which loads the dataset with the engine's own loaders and
refuses anything the engine could not train on; a refusal is shown with st.error and nothing is stored.
Layout only here.
"""

import json

import streamlit as st

from control import dataset_registry as registry
from dashboard import forms, plots, reads
from dashboard import plots_compare as pc
from dashboard.state import db_url_for_session
from dashboard.text import plain
from dashboard.views import health_panel
from engine.data import DATASET_KINDS, TORCHVISION_SETS, DatasetError

url = db_url_for_session()

KIND_HELP = {
    "imagefolder": "A folder with one sub-folder of images per class (or train/, optional val/ (valid/, validation/) "
    "and test/ folders holding those).",
    "csv": "A CSV with a path and a label column (optional split column: train/val/test) and the images it names.",
    "idx": "A folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] (t10k-* optional), MNIST-style.",
    "npz": "A .npz with x_train/y_train (and x_test/y_test), or images/labels; optional class_names.",
    "hdf5": "An .h5 file with an images dataset and a labels dataset (Galaxy10 DECaLS: images / ans).",
    "torchvision": "A torchvision built-in, from a local copy under the given root folder (no download here).",
    "digits": "scikit-learn's 8×8 digits (bundled; no path).",
}


st.title("Datasets")

rows = reads.datasets(url)
if "_datasets_flash" in st.session_state:
    st.success(st.session_state.pop("_datasets_flash"))
if "_datasets_pick_next" in st.session_state:
    st.session_state["datasets_pick"] = st.session_state.pop("_datasets_pick_next")
tab_list, tab_register = st.tabs(["Registered", "Register a dataset"])

# ------------------------------------------------------------------------------------- registered
with tab_list:
    if not rows:
        st.info("No datasets registered yet: add one under **Register a dataset**.")
    else:
        st.dataframe(pc.datasets_table(rows), hide_index=True, key="datasets_table", placeholder="–")
        missing = [d["name"] for d in rows if d["summary"] is None]
        if missing and st.button(
            f"Compute statistics of {plain(', '.join(missing))}",
            key="datasets_compute_missing",
            help="Load each once and store its class counts, image size and mean/std (also done when you pick it)",
        ):
            failed = False
            with st.spinner("Summarising…"):
                for missing_name in missing:
                    try:
                        registry.refresh_summary(url, missing_name)
                    except DatasetError as exc:
                        failed = True
                        st.error(plain(f"{missing_name} cannot be loaded: {exc}"))
            reads.datasets.clear()
            if not failed:
                st.rerun()
        names = [d["name"] for d in rows]
        if st.session_state.get("datasets_pick") not in names:
            st.session_state["datasets_pick"] = names[0]
        name = st.selectbox("Dataset", names, key="datasets_pick")
        row = next(d for d in rows if d["name"] == name)
        summary = row["summary"]
        if summary is None:
            with st.spinner(f"Summarising {plain(name)} (once)…"):
                try:
                    summary = registry.refresh_summary(url, name)
                    reads.datasets.clear()
                    st.rerun()  # the table above then shows it too
                except DatasetError as exc:
                    st.error(plain(f"{name} cannot be loaded: {exc}"))
        if summary:
            m = st.columns(5)
            m[0].metric("Classes", summary["num_classes"])
            m[1].metric("Train images", f"{summary['train_count']:,}")
            m[2].metric("Validation images", f"{summary['val_count']:,}" if summary.get("val_count") else "held out")
            m[3].metric("Test images", f"{summary['test_count']:,}" if summary["test_count"] else "held out")
            m[4].metric("Image (H×W×C)", "×".join(str(x) for x in summary["image_shape"]))
            for note in summary.get("notes") or []:
                st.caption(plain(note))
            sizes = summary.get("image_sizes") or {}
            st.markdown(
                f"**Mean** {', '.join(f'{v:.4f}' for v in summary['mean'])} · **std** "
                f"{', '.join(f'{v:.4f}' for v in summary['std'])} (per channel, pixels in [0, 1])"
            )
            if sizes:
                st.markdown(
                    f"**Image sizes** ({sizes['scanned']:,} {'files' if sizes['source'] == 'files' else 'images'}, "
                    f"{sizes['distinct']} distinct): width {sizes['width'][0]}–{sizes['width'][2]} "
                    f"(median {sizes['width'][1]}), height {sizes['height'][0]}–{sizes['height'][2]} "
                    f"(median {sizes['height'][1]}); loaded as {sizes['loaded_as'][0]}×{sizes['loaded_as'][1]}"
                )
            st.plotly_chart(pc.class_counts_figure(summary), key="datasets_counts")

            st.subheader("Samples per class")
            c1, c2, c3 = st.columns([1, 3, 1.2], vertical_alignment="bottom")
            per_class = c1.slider("Per class", 1, 16, 8, key="datasets_per_class")
            stretch = plots.stretch_toggle(c3, key="datasets_stretch")
            class_names = [str(c) for c in summary["class_names"]]
            shown = c2.multiselect("Classes", class_names, default=class_names[:10], key=f"datasets_classes_{name}")
            try:
                grid = registry.sample_grid(reads.dataset_arrays(url, name), per_class, seed=0)
            except DatasetError as exc:
                st.error(plain(f"{name} cannot be loaded: {exc}"))
                grid = []
            for _, cname, images in grid:
                if cname in shown and len(images):
                    st.image(
                        [plots.display_image(im, 64, stretch=stretch) for im in images],
                        caption=[plain(cname)] + [""] * (len(images) - 1),
                        width=64,
                    )

            st.subheader("Data health")  # dashboard.views.health_panel: imbalance and the loss it suggests, leaks
            if summary.get("class_counts"):
                st.markdown("**Class balance** of the training split")
                health_panel.imbalance_section(
                    summary["class_counts"],
                    class_names,
                    forms.merge(forms.default_config(), {"data": {"dataset": name}}),
                    f"datasets_health_{name}",
                )
            st.markdown("**Near-duplicates between train and test** (the split a run with default data settings gets)")
            health_panel.duplicates_section(url, json.dumps({"dataset": name}), f"datasets_health_{name}")

# ------------------------------------------------------------------------------------- register
with tab_register:
    kinds = [k for k in DATASET_KINDS if k != "digits"]
    kind = st.selectbox("Format", kinds, key="register_kind")
    st.caption(KIND_HELP[kind])
    with st.form("register_form"):
        name = st.text_input("Name", key="register_name", placeholder="e.g. galaxy10")
        path = st.text_input("Path" if kind != "torchvision" else "Root folder of the local copy", key="register_path")
        fields = {}
        if kind in ("imagefolder", "csv"):
            fields["image_size"] = st.number_input(
                "Resize to (px, 0 = keep; mixed sizes go to the largest)", 0, 1024, 0, key="register_size"
            )
        if kind == "csv":
            c = st.columns(4)
            fields["image_root"] = c[0].text_input("Image folder (default: the CSV's folder)", key="register_root")
            fields["path_column"] = c[1].text_input("Path column", "path", key="register_pcol")
            fields["label_column"] = c[2].text_input("Label column", "label", key="register_lcol")
            fields["split_column"] = c[3].text_input("Split column", "split", key="register_scol")
        if kind == "hdf5":
            c = st.columns(2)
            fields["image_key"] = c[0].text_input("Images dataset", "images", key="register_ikey")
            fields["label_key"] = c[1].text_input("Labels dataset", "ans", key="register_lkey")
        if kind in ("idx", "hdf5"):
            fields["class_names"] = st.text_input("Class names, comma-separated (optional)", key="register_names")
        if kind == "torchvision":
            fields["torchvision_name"] = st.selectbox("Dataset", TORCHVISION_SETS, key="register_tv")
            fields["emnist_split"] = st.text_input("EMNIST split", "balanced", key="register_emnist")
        replace = st.checkbox("Replace a dataset of the same name", key="register_replace")
        submitted = st.form_submit_button("Register", type="primary", key="register_submit")
    if submitted:
        try:
            with st.spinner("Reading every image…"):
                summary = registry.register_dataset(
                    url, name, kind, path, registry.form_options(kind, **fields), replace=replace
                )
        except DatasetError as exc:
            st.error(f"Not registered: {plain(exc)}")
        else:
            reads.clear_dataset_caches()  # a replaced dataset must be re-read
            st.session_state["_datasets_flash"] = (
                f"Registered **{plain(name.strip())}**: {summary['num_classes']} classes, "
                f"{registry.counts_line(summary)} of {'×'.join(map(str, summary['image_shape']))}."
                + "".join(f" {plain(n)}." for n in summary.get("notes") or [])
            )
            st.session_state["_datasets_pick_next"] = name.strip()
            st.rerun()  # so the list above shows it
