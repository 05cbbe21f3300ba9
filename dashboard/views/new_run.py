"""New run: design an experiment by pointing and clicking, check it, launch it.

Layout only. The fields come from the config schema (dashboard.forms.field_specs), values go
config <-> widgets through dashboard.forms, checks are control.preflight.validate_all, and Launch is
control.launcher.launch_run. Prefill: ?clone=<run id> (or st.session_state["clone_from"]), a preset,
an uploaded YAML, or the Augmentations page's "Use this pipeline" (st.session_state[forms.PIPELINE_FOR_BUILDER]:
its augment section replaces the form's). The config being edited is kept in st.session_state["builder_config"].
"""

import streamlit as st

from dashboard import aug_params, drafts, forms, lr_find_panel, plots, reads
from dashboard.state import db_url_for_session
from dashboard.text import plain
from db import queries

url = db_url_for_session()
ss = st.session_state


# ------------------------------------------------------------------------------- state helpers
def _load(config: dict, notice: str | None = None) -> None:
    """Put a config into every builder widget (before they are drawn, or from a callback)."""
    ss.update(forms.config_to_state(config))
    ss["builder_config"] = forms.merge(forms.default_config(), config)
    ss["builder_errors"] = []
    ss.pop("builder_valid_config", None)
    if notice:
        ss["builder_notice"] = notice


def _forget_clone() -> None:
    """A preset, an upload or a reset replaces the whole form, so the run is no longer a copy of the
    cloned one: its parent link goes, and so do the tags and notes that came with the clone (unless
    the user has edited them since)."""
    ss.pop("builder_parent", None)
    ss.pop("builder_clone_applied", None)
    st.query_params.pop("clone", None)
    copied = ss.pop("builder_cloned_meta", None)
    if copied:
        for key, value in zip(("builder_tags", "builder_notes"), copied):
            if ss.get(key) == value:
                ss[key] = ""


def _current():
    return forms.state_to_config(ss, ss.get("builder_config"))


def _on_source_change():
    ss[forms.KEY_PREFIX + "model.name"] = forms.DEFAULT_MODEL_NAME[ss[forms.KEY_PREFIX + "model.source"]]


def _on_upload():
    f = ss.get("builder_upload")
    if f is None:
        return
    config, errors = forms.config_from_upload(f.getvalue())
    if errors:
        ss["builder_errors"] = errors
        ss["builder_notice"] = f"⚠️ {f.name} is not a valid config; nothing was loaded."
    else:
        _forget_clone()
        _load(config, f"Loaded {f.name}.")


def _apply_preset(url):
    name = ss.get("builder_preset")
    if not name:
        return
    config, _ = _current()
    dataset = forms.get_path(config, "data.dataset")
    row = queries.get_dataset(url, dataset)
    size, classes = forms.dataset_shape(row["summary"] if row else None)
    size = forms.get_path(config, "data.image_size") or size  # the form's resize wins
    try:
        preset, notes = forms.preset(name, dataset, size, classes)
    except Exception as exc:  # a preset that cannot serve this dataset says why
        ss["builder_notice"] = f"⚠️ Preset {name}: {exc}"
        return
    _forget_clone()
    _load(preset, f"Applied preset {name} for {dataset}." + "".join(f"\n- {n}" for n in notes))


def _on_tab():
    title = (ss.get("builder_tabs") or "").split(" ⚠️")[0]
    ss["builder_section"] = next((k for k, t in forms.SECTIONS if t == title), "data")


def _show_first_error(errors):
    sections = [forms.section_of(f) for f, _ in errors]
    ss["builder_section"] = next((s for s in sections if s != "general"), ss.get("builder_section", "data"))


def _request(action: str):
    ss["builder_action"] = action  # done at the top of the next run, under a spinner


def _check(url, launch: bool):
    from control.launcher import LaunchRefused, launch_run
    from control.preflight import validate_all

    config, form_errors = _current()
    ss["builder_config"] = config
    ss.pop("builder_valid_config", None)
    if form_errors or not launch:  # a value the form refused never launches; list it with the rest
        notes: list = []
        _, errors = validate_all(config, url, notes)
        ss["builder_errors"], ss["builder_check_notes"] = errors, notes
        if not form_errors and not errors:
            ss["builder_valid_config"] = config
        _show_first_error(form_errors + errors)
        return
    try:
        run_id = launch_run(
            url,
            config,
            tags=forms.parse_tags(ss.get("builder_tags", "")),
            notes=ss.get("builder_notes", ""),
            parent_run_id=ss.get("builder_parent"),
            backend=ss.get("builder_backend"),
        )
    except LaunchRefused as exc:
        ss["builder_errors"] = exc.errors
        _show_first_error(exc.errors)
        return
    ss["builder_errors"] = []
    ss["builder_launched"] = run_id
    lr_find_panel.on_launch(url, run_id, config)  # its LR came from the LR range test: say so on the run


def _restore_draft(saved: dict) -> None:
    _load(saved["config"], "Restored the run you were building.")
    ss["builder_tags"], ss["builder_notes"] = saved.get("tags") or "", saved.get("notes") or ""
    if saved.get("parent"):
        ss["builder_parent"] = int(saved["parent"])
    if saved.get("cloned_meta"):
        ss["builder_cloned_meta"] = tuple(saved["cloned_meta"])


def _save_draft(config: dict) -> None:
    draft_id = st.query_params.get("draft") or ss.setdefault("builder_draft_id", drafts.new_id())
    st.query_params["draft"] = draft_id
    keep = {k: ss.get(f"builder_{k}") for k in ("tags", "notes", "parent", "cloned_meta")}
    drafts.save(url, draft_id, {"config": config, **keep})


def _reset():
    _forget_clone()
    _load(forms.default_config(), "Reset to the defaults.")


# ------------------------------------------------------------------------------- prefill
if (sent := ss.pop("builder_send", None)) is not None:  # another page's "use this config" (e.g. a suggested loss)
    _forget_clone()
    _load(sent["config"], sent.get("notice"))
    if sent.get("parent"):
        ss["builder_parent"] = int(sent["parent"])
clone = st.query_params.get("clone") or ss.pop("clone_from", None)
if forms.KEY_PREFIX + "name" not in ss and (saved := drafts.load(url, st.query_params.get("draft"))):
    _restore_draft(saved)  # a reload: the half-built run comes back, edits and all
    if clone is not None:
        ss["builder_clone_applied"] = str(clone)  # the draft already holds the clone and its edits
if clone is not None and str(ss.get("builder_clone_applied")) != str(clone):
    ss["builder_clone_applied"] = str(clone)
    source_run = queries.get_run(url, int(clone)) if str(clone).isdigit() else None
    if source_run is None:
        ss["builder_notice"] = f"⚠️ There is no run #{clone} to clone."
    else:
        _load(source_run["config"], f"Prefilled from run #{clone} — edit and launch.")
        ss["builder_parent"] = int(clone)
        ss["builder_tags"] = ", ".join(source_run["tags"] or [])
        ss["builder_notes"] = source_run["notes"] or ""
        ss["builder_cloned_meta"] = (ss["builder_tags"], ss["builder_notes"])
if (pipeline := ss.pop(forms.PIPELINE_FOR_BUILDER, None)) is not None:  # "Use this pipeline" (Augmentations)
    _load(
        forms.with_pipeline(ss.get("builder_config") or forms.default_config(), pipeline),
        "Using the augmentation pipeline from the Augmentations page; the rest of the form is as it was.",
    )
    ss["builder_section"] = "augment"
if forms.KEY_PREFIX + "name" not in ss:
    _load(ss.get("builder_config") or forms.default_config())
for key, value in forms.config_to_state(ss.get("builder_config") or {}).items():
    if key.startswith(forms.KEY_PREFIX) and key not in ss:  # a widget not drawn lately
        ss[key] = value

if action := ss.pop("builder_action", None):
    with st.spinner("Checking the config: loading the dataset, building the model, augmenting a real image…"):
        _check(url, launch=action == "launch")
    if (launched := ss.pop("builder_launched", None)) is not None:
        st.switch_page("views/run_detail.py", query_params={"run": str(launched)})

config, form_errors = _current()
ss["builder_config"] = config
_save_draft(config)
# What the form refuses (text that does not parse, a number out of range) is reported at once; the
# rest comes from the last Validate / Launch, less what the form already says about the same field.
checked = forms.without_fields([tuple(e) for e in ss.get("builder_errors", [])], {f for f, _ in form_errors})
errors = list(dict.fromkeys(form_errors + checked))
by_section = forms.errors_by_section(errors)


# ------------------------------------------------------------------------------- widgets
def _field(spec: forms.FieldSpec, field_errors: dict):
    allowed = f"Allowed: {spec.range_text}." if spec.range_text else ""
    kw = dict(key=spec.key, help=" ".join(filter(None, [spec.help, allowed])) or None, persist_state="session")
    if spec.kind == "bool":
        st.toggle(spec.label, **kw)
    elif spec.kind in ("int", "float"):
        # No min/max on the widget: a browser would keep the last in-range value and drop what was
        # typed; forms.out_of_range reports it on this field instead.
        cast = int if spec.kind == "int" else float
        st.number_input(
            spec.label,
            step=cast(spec.step),
            format="%d" if spec.kind == "int" else "%g",
            placeholder="none (empty)" if spec.optional else None,
            **kw,
        )
    elif spec.kind == "choice":
        st.selectbox(spec.label, spec.options, format_func=forms.choice_label(spec.path), **kw)
    elif spec.kind == "multichoice":
        st.multiselect(spec.label, spec.options, **kw)
    elif spec.kind == "dataset":
        names = reads.dataset_names(url)
        current = ss.get(spec.key) or ""
        st.selectbox(
            spec.label,
            names + ([current] if current and current not in names else []),
            accept_new_options=True,
            **(kw | {"help": "A dataset registered on the Datasets page, or kind:path (e.g. imagefolder:/data/pets)"}),
        )
    elif spec.kind == "model_name":
        source = forms.get_path(config, "model.source")
        catalogue = reads.model_catalogue(source) if source != "custom" else None
        st.selectbox(
            spec.label,
            forms.model_name_options(source, ss.get(spec.key), catalogue),
            accept_new_options=source != "custom",
            **kw,
        )
    else:  # text and comma-separated lists
        st.text_input(spec.label, placeholder="none" if spec.optional else None, **kw)
    for msg in field_errors.get(spec.path, []):
        st.error(plain(msg), icon="⚠️")


def _grid(specs, field_errors, ncols=3):
    cols = st.columns(ncols)
    for i, spec in enumerate(specs):
        with cols[i % ncols]:
            _field(spec, field_errors)


def _image_side() -> int | None:
    """The side of the images the pipeline will see: data.image_size, else the registered dataset's."""
    size = forms.get_path(config, "data.image_size")
    if size:
        return int(size)
    dataset = forms.get_path(config, "data.dataset")
    row = queries.get_dataset(url, dataset)
    side = forms.dataset_shape(row["summary"] if row else None)[0]
    if side is None:  # a built-in without a stored summary: the preview loads its arrays anyway (cached)
        try:
            side = int(reads.dataset_arrays(url, dataset).train_x.shape[1])
        except Exception:  # no size known: the transforms' own defaults
            side = None
    return side


def _add_step():
    from engine.augment import BUILDER_DEFAULTS

    defaults = aug_params.fitted_defaults(BUILDER_DEFAULTS, _image_side())  # no 4 px shift of an 8 px digit
    forms.add_step(ss, ss["builder_add_transform"], defaults)


def _param_step(spec, kind: str) -> float:
    if kind in ("int", "int_pair"):
        return 1
    if spec is not None and spec.max is not None and spec.max <= 1:
        return 0.05
    values = spec.default if spec is not None and isinstance(spec.default, (list, tuple)) else [spec and spec.default]
    big = any(isinstance(v, (int, float)) and abs(v) >= 5 for v in values)
    return 1.0 if big else 0.05


def _param_widget(uid: str, name: str, kind: str, spec) -> None:
    """One parameter's typed widget. Numbers carry no min/max on purpose (as the fields): a browser would
    keep the last in-range value; forms.typed_params reports the range on the step instead."""
    common = dict(help=spec.help_text(kind) if spec is not None else None, persist_state="session")
    empty = "default" if spec is None or spec.default is not aug_params.EMPTY else "training size"
    if kind in aug_params.NUMBER_KINDS + aug_params.PAIR_KINDS:
        cast = int if kind.startswith("int") else float
        number = dict(
            value=None,  # clearable (empty = the default); the value itself comes from the session state
            step=cast(_param_step(spec, kind)),
            format="%d" if cast is int else "%g",
            placeholder=empty,
        )
        if kind in aug_params.PAIR_KINDS:
            lo, hi = st.columns(2)
            lo.number_input(f"{name} (low)", key=aug_params.key(uid, name, 0), **number, **common)
            hi.number_input(f"{name} (high)", key=aug_params.key(uid, name, 1), **number, **common)
        else:
            st.number_input(name, key=aug_params.key(uid, name), **number, **common)
    elif kind == "bool":
        st.checkbox(name, key=aug_params.key(uid, name), **common)
    elif kind == "choice":
        st.selectbox(name, spec.options, key=aug_params.key(uid, name), format_func=spec.choice_label, **common)
    else:
        st.text_input(f"{name} (JSON)", key=aug_params.key(uid, name), placeholder=empty, **common)


def _param_grid(uid: str, names: list[str], fields: dict, specs: dict, ncols: int = 4) -> None:
    cols = st.columns(ncols)
    for j, name in enumerate(names):
        with cols[j % ncols]:
            _param_widget(uid, name, fields[name], specs.get(name))


def _steps_editor(field_errors):
    rows = ss.get(forms.STEPS_KEY, [])
    st.markdown("**Training augmentation pipeline** — applied in this order to every training image")
    if not rows:
        st.caption("No augmentation: the model sees the training images as they are.")
    for i, row in enumerate(rows):
        uid = row["uid"]
        c = st.columns([0.3, 3.0, 1.2, 0.5, 0.5, 0.5], vertical_alignment="bottom")
        c[0].markdown(f"**{i + 1}.**")
        c[1].markdown(f"`{row['name']}`" if row["name"].isidentifier() else plain(row["name"]))
        c[2].number_input(
            "p",
            step=0.05,  # unbounded like the fields: forms.steps_from_state reports a p outside [0, 1]
            format="%g",
            key=f"aug:{uid}:p",
            help="Probability of applying this step to an image",
            persist_state="session",
        )
        c[3].button(
            "↑",
            key=f"aug:{uid}:up",
            on_click=forms.move_step,
            args=(ss, i, -1),
            disabled=i == 0,
            help="Move up",
            width="stretch",
        )
        c[4].button(
            "↓",
            key=f"aug:{uid}:down",
            on_click=forms.move_step,
            args=(ss, i, 1),
            disabled=i == len(rows) - 1,
            help="Move down",
            width="stretch",
        )
        c[5].button(
            "✕", key=f"aug:{uid}:remove", on_click=forms.remove_step, args=(ss, i), help="Remove", width="stretch"
        )
        # Typed widgets from the transform's schema: the params it was given first, the rest folded away.
        fields, specs = row.get("fields") or {}, aug_params.specs_by_name(row["name"])
        given = [n for n in fields if n in row.get("keys", ())]
        more = [n for n in fields if n not in given]
        if given:
            _param_grid(uid, given, fields, specs)
        errors = field_errors.get(f"augment.train.{i}", [])
        extra = (ss.get(f"aug:{uid}:params") or "").strip() not in ("", "{}")
        title = f"More parameters of {plain(row['name'])} ({len(more)})" if more else "Other parameters (JSON)"
        with st.expander(title, expanded=extra or (bool(errors) and bool(more))):
            if more:
                _param_grid(uid, more, fields, specs)
            st.text_input(
                "other params (JSON or YAML mapping)",
                key=f"aug:{uid}:params",
                persist_state="session",
                help='Keyword arguments no widget above edits, e.g. {"fill": [0, 0, 0]}; '
                "a param given here wins over its widget",
            )
        try:
            overridden = sorted(set(forms.parse_params(ss.get(f"aug:{uid}:params"))) & set(fields))
        except ValueError:  # reported with the step's errors
            overridden = []
        if overridden:
            st.caption(f"Set in the JSON box, which wins over the widget: {', '.join(overridden)}")
        for msg in errors:
            st.error(plain(msg), icon="⚠️")
    for msg in field_errors.get("augment.train", []):
        st.error(plain(msg), icon="⚠️")

    c = st.columns([4, 1], vertical_alignment="bottom")
    c[0].selectbox(
        "Add a transform",
        reads.transforms(),
        key="builder_add_transform",
        help="Common transforms first (with sensible params, fitted to the image size), then every "
        "albumentations transform",
    )
    c[1].button("➕ Add step", on_click=_add_step, width="stretch")
    steps_ok = not any(f.startswith("augment.train") for f, _ in form_errors)
    data_section = {k: forms.get_path(config, f"data.{k}") for k in ("image_size", "channels")}
    _pipeline_preview(forms.get_path(config, "data.dataset"), config["augment"]["train"], data_section, steps_ok)


def _reroll_preview():
    ss["builder_preview_seed"] = int(ss.get("builder_preview_seed", 0)) + 1


@st.fragment
def _pipeline_preview(dataset: str, steps: list, data_section: dict, steps_ok: bool):
    """Real training images of the chosen dataset through the pipeline being edited (the engine's own code,
    cached by dataset and pipeline). A fragment: re-rolling or toggling here reruns only this part."""
    import json

    st.markdown("**Preview** — real training images through this pipeline, as the engine augments them")
    ss.setdefault("builder_preview_on", True)
    c = st.columns([1.2, 1.6, 1, 2.2], vertical_alignment="center")
    show = c[0].toggle("Show preview", key="builder_preview_on", persist_state="session")
    stretch = plots.stretch_toggle(c[1], key="builder_preview_stretch")
    c[2].button("🎲 Re-roll", key="builder_preview_reroll", on_click=_reroll_preview, disabled=not show)
    if not show:
        return
    if not steps_ok:
        st.caption("The preview appears when the steps' parameters are valid.")
        return
    seed = int(ss.get("builder_preview_seed", 0))
    try:
        images, grid, names = reads.augment_preview(
            url, dataset, json.dumps(steps, sort_keys=True), json.dumps(data_section, sort_keys=True), 4, 4, seed
        )
    except Exception as exc:  # a dataset that cannot load or a step albumentations refuses: say so, go on
        st.caption(f"No preview: {plain(str(exc)[:300])}")
        return
    for j in range(len(images)):
        st.image(
            [plots.display_image(images[j], 64, stretch=stretch)]
            + [plots.display_image(grid[r, j], 64, stretch=stretch) for r in range(len(grid))],
            caption=[f"original · {plain(names[j])}"] + [f"#{r + 1}" for r in range(len(grid))],
            width=64,
        )


def _section(section: str):
    specs = [s for s in forms.specs_by_section().get(section, []) if forms.is_relevant(s, config)]
    shown = {s.path for s in specs} | (
        {f"augment.train.{i}" for i in range(len(ss.get(forms.STEPS_KEY, [])))} if section == "augment" else set()
    )
    field_errors, rest = forms.split_errors(by_section.get(section, []), shown)
    for field, msg in rest:
        st.error(f"**{plain(forms.field_label(field))}**: {plain(msg)}", icon="⚠️")
    if section == "augment":
        _steps_editor(field_errors)
        st.markdown("**Mixup / CutMix** (per batch)")
    main = [s for s in specs if not s.advanced and s.kind != "steps"]
    advanced = [s for s in specs if s.advanced]
    if section == "model":
        c = st.columns(3)
        with c[0]:
            source_spec = next(s for s in main if s.path == "model.source")
            st.selectbox(
                source_spec.label,
                source_spec.options,
                key=source_spec.key,
                help=source_spec.help,
                on_change=_on_source_change,
                persist_state="session",
            )
        with c[1]:
            _field(next(s for s in main if s.path == "model.name"), field_errors)
        main = [s for s in main if s.path not in ("model.source", "model.name")]
    _grid(main, field_errors)
    if advanced:
        with st.expander("Advanced", expanded=any(s.path in field_errors for s in advanced)):
            _grid(advanced, field_errors)
    if section == "schedule":
        _lr_preview()
    if section == "optim":  # LR range test on this config; "use this LR" fills optim.lr
        lr_find_panel.render(url, config, form_ok=not form_errors)


def _lr_preview():
    from engine.config import ConfigError, parse_config

    try:
        from engine.training.loop import lr_trajectory

        lrs = lr_trajectory(parse_config(config))
    except (ConfigError, ValueError):
        st.caption("The LR preview appears when the optimizer and schedule settings are valid.")
        return
    except Exception as exc:  # a preview must never take the builder down
        st.caption(f"No LR preview: {plain(exc)}")
        return
    st.plotly_chart(plots.lr_preview(lrs), key="builder_lr_preview")


# ------------------------------------------------------------------------------- page
st.title("New run")
st.caption(
    "Design an image-classifier experiment, check it, and launch it. The engine trains it in its own "
    "process; you can close the browser meanwhile."
)

if notice := ss.pop("builder_notice", None):
    (st.warning if notice.startswith("⚠️") else st.success)(plain(notice.removeprefix("⚠️ ")))

presets = forms.available_presets()
with st.container(border=True):
    if presets:
        p = st.columns([5, 1], vertical_alignment="bottom")
        p[0].selectbox(
            "Start from a preset",
            forms.preset_order(presets),
            index=None,  # nothing is applied until the user picks one
            placeholder="none: the defaults below",
            key="builder_preset",
            format_func=lambda n: f"{n} — {presets[n]}",
            help="Our users' recipes and fast known-good starts; adapted to the dataset chosen in the Data tab",
        )
        p[1].button(
            "Apply preset",
            on_click=_apply_preset,
            args=(url,),
            width="stretch",
            help="Replace the form with this preset for the chosen dataset",
        )
    top = st.columns([5, 1], vertical_alignment="bottom")
    with top[0]:
        st.file_uploader(
            "Load a config (YAML or JSON)", type=["yaml", "yml", "json"], key="builder_upload", on_change=_on_upload
        )
    with top[1]:
        st.button("↺ Reset to defaults", on_click=_reset, width="stretch")
        if ss.get("builder_parent"):
            st.caption(f"Cloned from run #{ss['builder_parent']}")

general = st.columns([2, 2, 3])
with general[0]:
    _field(
        next(s for s in forms.field_specs() if s.path == "name"),
        forms.split_errors(by_section.get("general", []), {"name"})[0],
    )
general[1].text_input(
    "Tags",
    key="builder_tags",
    placeholder="baseline, digits",
    help="Comma-separated; filter and group runs by them on the Runs page",
    persist_state="session",
)
general[2].text_input("Notes", key="builder_notes", placeholder="What is this run testing?", persist_state="session")

# The tabs track which section is open (builder_section) so that a label gaining or losing its
# error count keeps the same tab open; a refused check opens the section of its first error.
tab_labels = {
    key: title + (f" ⚠️ {len(by_section[key])}" if by_section.get(key) else "") for key, title in forms.SECTIONS
}
ss["builder_tabs"] = tab_labels.get(ss.get("builder_section"), tab_labels["data"])
tabs = st.tabs(list(tab_labels.values()), key="builder_tabs", on_change=_on_tab)
for (section, _), tab in zip(forms.SECTIONS, tabs):
    if tab.open:  # only the section on screen draws its widgets; the others keep their values (persist_state)
        with tab:
            _section(section)

st.divider()
st.caption("**This run:** " + plain(forms.config_summary(config)))
if errors:
    st.error("**Fix these before launching:**\n\n" + "\n".join(f"- {line}" for line in forms.summary_lines(errors)))
elif ss.get("builder_valid_config") == config:
    st.success(
        "The config is valid and its checks passed (dataset, model, augmentation on a real image). Ready to launch."
    )
    for field, note in ss.get("builder_check_notes") or []:  # e.g. the dataset's own validation split wins
        st.info(plain(f"{field}: {note}"))

yaml_text = None if form_errors else forms.config_yaml(config)
actions = st.columns([1, 1, 1, 3])
backends = forms.available_backends()
if len(backends) > 1:  # a Slurm submit host: choose where this run executes
    actions[3].selectbox(
        "Run on",
        backends,
        key="builder_backend",
        help="local: a process on this machine (queued behind LAB_MAX_CONCURRENT runs); "
        "slurm: submitted with sbatch, Slurm queues it",
    )
actions[0].button(
    "✔ Validate",
    on_click=_request,
    args=("validate",),
    width="stretch",
    help="Check every field, then load the dataset, build the model and push one batch through it",
)
actions[1].button(
    "🚀 Launch",
    type="primary",
    on_click=_request,
    args=("launch",),
    width="stretch",
    help="Validate, then start training in its own process",
)
actions[2].download_button(
    "⬇ Config YAML",
    data=yaml_text or "",
    disabled=yaml_text is None,
    file_name=f"{(config.get('name') or 'experiment').replace(' ', '_')}.yaml",
    mime="application/x-yaml",
    width="stretch",
    help="Run it without the dashboard: python -m engine train experiment.yaml"
    if yaml_text
    else "Fix the highlighted fields first",
)

with st.expander("Config as YAML"):
    st.code(yaml_text or "# the form has invalid values; fix the highlighted fields", language="yaml")
