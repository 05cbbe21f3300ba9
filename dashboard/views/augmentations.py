"""Augmentation browser: the same images through a pipeline N times, exactly as the engine augments them.

Pipeline from the builder being edited (st.session_state["builder_config"]), from a past run's config, or
edited here as YAML; "Use this pipeline" sends a past run's or the edited one to the builder
(st.session_state[forms.PIPELINE_FOR_BUILDER]). The contrast-stretch toggle changes only the display. Images, augmentation, Mixup/CutMix and the fast-path view all come from
dashboard.augment_preview, which calls the engine's own code. Layout only here.
"""

import random

import streamlit as st

from dashboard import augment_preview as ap
from dashboard import forms, plots, reads
from dashboard.state import db_url_for_session
from dashboard.text import plain
from engine.config import ConfigError
from engine.data import DatasetError

url = db_url_for_session()

SRC_BUILDER, SRC_RUN, SRC_EDIT = "The builder (being edited)", "A past run", "Edit here"


def _reroll():
    st.session_state["aug_seed"] = random.randrange(1, 2**31 - 1)


def _other_images():
    st.session_state["aug_image_seed"] = random.randrange(1, 2**31 - 1)


def _edit_copy(section):
    st.session_state["aug_yaml"] = ap.augment_yaml(section)
    st.session_state["aug_source"] = SRC_EDIT


def _side(dataset: str | None) -> int | None:
    """The image side of a dataset (the page loads its images below anyway: a cached resource)."""
    try:
        return int(reads.dataset_arrays(url, dataset).train_x.shape[1]) if dataset else None
    except (DatasetError, OSError, ValueError):
        return None


st.title("Augmentation browser")
st.caption(
    "What the model actually sees: the engine's own pipeline (albumentations, seeded as in training), "
    "applied to real images of the dataset."
)

# ------------------------------------------------------------------------------------- pipeline
builder = st.session_state.get("builder_config")
sources = ([SRC_BUILDER] if builder else []) + [SRC_RUN, SRC_EDIT]
if st.session_state.get("aug_source") not in sources:
    st.session_state["aug_source"] = sources[0]
source = st.radio("Pipeline from", sources, horizontal=True, key="aug_source")

augment_section, data_section = {}, {}
if source == SRC_BUILDER:
    augment_section, data_section = ap.sections_of(builder)
elif source == SRC_RUN:
    runs = reads.run_choices(url)
    if runs.empty:
        st.info("No runs yet: edit a pipeline here instead, or build one on the **New run** page.")
    else:
        run_id = st.selectbox(
            "Run",
            runs["id"].tolist(),
            key="aug_run",
            format_func=lambda i: f"#{i} {runs.set_index('id').loc[i, 'name']}",
        )
        augment_section, data_section = ap.sections_of(reads.run_config(url, int(run_id)))
else:
    # A first pipeline sized for the dataset on screen; while it is left untouched it follows the dataset
    # (an 8 px digit gets 1 px of padding, a 32 px image 4 px).
    shown = st.session_state.get("aug_dataset") or next(iter(reads.dataset_names(url)), None)
    untouched = st.session_state.get("aug_yaml") == st.session_state.get("_aug_yaml_default")
    if "aug_yaml" not in st.session_state or (untouched and st.session_state.get("_aug_yaml_side_of") != shown):
        st.session_state["aug_yaml"] = ap.augment_yaml(ap.default_augment(_side(shown)))
        st.session_state["_aug_yaml_default"] = st.session_state["aug_yaml"]
        st.session_state["_aug_yaml_side_of"] = shown
    st.text_area("augment section (YAML): train steps and mixup", key="aug_yaml", height=220)

try:
    augment = (
        ap.parse_augment_yaml(st.session_state["aug_yaml"]) if source == SRC_EDIT else ap.parse_augment(augment_section)
    )
except ConfigError as exc:
    for field, msg in exc.errors:
        st.error(plain(f"{field}: {msg}"))
    st.stop()

if source != SRC_BUILDER and st.button(
    "➡ Use this pipeline in the builder",
    key="aug_use_pipeline",
    help="Open New run with these augmentation steps (and Mixup/CutMix) in place of the form's; "
    "every other field stays as it was",
):
    st.session_state[forms.PIPELINE_FOR_BUILDER] = augment.model_dump(mode="json", include={"train", "mixup"})
    st.switch_page("views/new_run.py")

if source != SRC_EDIT:
    with st.expander("This pipeline as YAML"):
        st.code(ap.augment_yaml(augment.model_dump(mode="json", include={"train", "mixup"})), language="yaml")
        st.button(
            "Edit a copy here", on_click=_edit_copy, args=(augment.model_dump(mode="json", include={"train", "mixup"}),)
        )

# ------------------------------------------------------------------------------------- dataset and controls
names = reads.dataset_names(url)
if not names:
    st.info("No datasets registered. Add one on the **Datasets** page.")
    st.stop()
wanted = data_section.get("dataset")
if wanted in names and st.session_state.get("_aug_ds_from") != wanted:
    st.session_state["aug_dataset"] = wanted  # follow the pipeline's dataset when the source changes
    st.session_state["_aug_ds_from"] = wanted
st.session_state.setdefault("aug_seed", 0)
st.session_state.setdefault("aug_image_seed", 0)

c1, c2, c3, c4 = st.columns([3, 2, 2, 2], vertical_alignment="bottom")
dataset = c1.selectbox("Dataset", names, key="aug_dataset")
k = c2.slider("Images", 1, 12, 6, key="aug_k")
n = c3.slider("Augmented versions", 1, 8, 5, key="aug_n")
c4.number_input("Seed", 0, 2**31 - 1, key="aug_seed", step=1)
b1, b2, b3 = st.columns([1, 1, 4], vertical_alignment="center")
b1.button("🎲 Re-roll", key="aug_reroll", on_click=_reroll, help="Same images, new random augmentations (new seed)")
b2.button("Other images", key="aug_other", on_click=_other_images)
stretch = plots.stretch_toggle(b3, key="aug_stretch")

try:
    data = reads.dataset_arrays(url, dataset)
except DatasetError as exc:
    st.error(plain(f"Cannot load {dataset}: {exc}"))
    st.stop()

seed = int(st.session_state["aug_seed"])
indices = ap.pick_images(data, k, int(st.session_state["aug_image_seed"]))
images = ap.prepare_images(data, indices, data_section)
labels = data.train_y[indices]
st.caption(
    f"{plain(dataset)}: {images.shape[1]}×{images.shape[2]}×{images.shape[3]} as trained"
    + (f" (data.image_size = {data_section['image_size']})" if data_section.get("image_size") else "")
    + f" · {len(augment.train)} step(s): "
    + (", ".join(f"{plain(s.name)} (p={s.p:g})" for s in augment.train) or "none")
)

# ------------------------------------------------------------------------------------- the grid
st.subheader("Original beside augmented")
if not augment.train:
    st.info("This pipeline has no augmentation steps: the model sees the original images.")
grid = ap.augment_grid(images, augment.train, n, seed)
for j in range(len(images)):
    cname = data.class_names[int(labels[j])]
    st.image(
        [plots.display_image(images[j], stretch=stretch)]
        + [plots.display_image(grid[r, j], stretch=stretch) for r in range(n)],
        caption=[f"original · {plain(cname)}"] + [f"#{r + 1}" for r in range(n)],
        width=96,
    )

# ------------------------------------------------------------------------------------- mixup / cutmix
st.subheader("Mixup / CutMix")
m = augment.mixup
st.caption(
    "Mixed with the engine's timm Mixup (one λ per batch), on the images above as one batch. "
    "The caption is the soft label the image is trained towards."
)
mc = st.columns(4)
mixup = {
    "mixup_alpha": mc[0].number_input("mixup_alpha", 0.0, 10.0, float(m.mixup_alpha), 0.1),
    "cutmix_alpha": mc[1].number_input("cutmix_alpha", 0.0, 10.0, float(m.cutmix_alpha), 0.1),
    "prob": mc[2].number_input("prob", 0.0, 1.0, float(m.prob), 0.1),
    "switch_prob": mc[3].number_input("switch_prob", 0.0, 1.0, float(m.switch_prob), 0.1),
}
batch = len(images) - len(images) % 2
if not (mixup["prob"] > 0 and (mixup["mixup_alpha"] > 0 or mixup["cutmix_alpha"] > 0)):
    st.info("Mixup and CutMix are off in this pipeline: set mixup_alpha or cutmix_alpha above 0 to preview them.")
elif batch < 2:
    st.info("Mixup needs at least two images: raise the number of images.")
else:
    mixed, soft, lam = ap.mixup_preview(grid[0, :batch], labels[:batch], data.num_classes, mixup, seed)
    st.image(
        [plots.display_image(x, stretch=stretch) for x in mixed],
        caption=[plain(ap.soft_label_caption(t, data.class_names)) for t in soft],
        width=128,
    )
    st.caption(f"λ = {lam:.2f} for this batch" + (" (not mixed this time: prob < 1)" if lam >= 0.999 else ""))

# ------------------------------------------------------------------------------------- fast path
st.subheader("Fast path (batched tensor augmentation)")
ok, why = ap.fast_path_support(augment.train, images.shape[1:])
if not augment.train:
    st.info("Nothing to augment.")
elif not ok:
    st.info(plain(f"Not shown: {why}."))
else:
    st.caption(
        "The same steps as the GPU-resident fast path runs them (engine.augment.batched): "
        "same meaning and probabilities, its own random numbers."
    )
    fast = ap.fast_path_grid(images, augment.train, n, seed)
    for j in range(len(images)):
        st.image(
            [plots.display_image(images[j], stretch=stretch)]
            + [plots.display_image(fast[r, j], stretch=stretch) for r in range(n)],
            caption=["original"] + [f"fast #{r + 1}" for r in range(n)],
            width=96,
        )
