"""The training run's flags for absl, defined from their one table (`training.config.RunConfig`).

`train` and `evaluate` define them all (`define_training`, once a process: evaluate reads a
run's data flags, and its flagfiles are train's); `prepare` the data flags it shares
(`define(names, ...)`). A flag's older name (`--classes`, `--crop`) is an alias of it.
`run_config()` is the parsed flags, a frozen `RunConfig`.
"""

from absl import flags

from tf_autoseg import datasets
from tf_autoseg.training import config as run_config_table
from tf_autoseg.training.config import RunConfig

_DEFINE = {
    "integer": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "string": flags.DEFINE_string,
    "bool": flags.DEFINE_bool,
    "list": flags.DEFINE_list,
}


def define(names=None, defaults=None, helps=None):
    """Defines the flags of `names` (default: all), in this module's name: the caller adopts
    them as key flags (`flags.adopt_module_key_flags(run_flags)`), so that its `--help` lists
    them. `defaults` and `helps` change a flag's default and help text for one program."""
    defaults, helps = defaults or {}, helps or {}
    for field in run_config_table.fields():
        if names is not None and field.name not in names:
            continue
        meta = field.metadata
        default = defaults.get(field.name, field.default)
        if isinstance(default, tuple):
            default = list(default)
        text = helps.get(field.name, meta["help"])
        if meta["kind"] == "enum":
            flags.DEFINE_enum(field.name, default, list(meta["choices"]), text)
        else:
            _DEFINE[meta["kind"]](field.name, default, text)
        if meta["formerly"]:
            flags.DEFINE_alias(meta["formerly"], field.name)


_DEFINED = []


def define_training():
    """Defines every training flag, the first time it is called in a process."""
    if _DEFINED:
        return
    _DEFINED.append(True)
    help = run_config_table.FIELDS["dataset"].metadata["help"]
    define(helps={"dataset": f"<{'|'.join(datasets.NAMES)}>: {help}"})
    flags.register_validator("dataset", _known_dataset)


def _known_dataset(name):
    # Checked when the flags are parsed, so that datasets registered after this module was
    # imported (tf_autoseg.datasets.register, entry points) are accepted.
    try:
        datasets.get(name)
    except ValueError:
        raise flags.ValidationError(
            f"--dataset must be one of {', '.join(datasets.names())}"
        ) from None
    return True


def values(names=None):
    """The parsed values of the table's flags by name (of `names`, default: all)."""
    return {
        field.name: flags.FLAGS[field.name].value
        for field in run_config_table.fields()
        if names is None or field.name in names
    }


def run_config():
    """The parsed training flags, a frozen `RunConfig` (what `runs.record_flags` writes)."""
    return RunConfig.from_mapping(values())
