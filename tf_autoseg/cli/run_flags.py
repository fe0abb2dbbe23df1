"""The training run's flags for absl, defined from their one table (`training.config.RunConfig`).

`train` defines them all; `prepare` the data flags it shares (`define(names, ...)`);
`evaluate` reads train's. A flag's older name (`--classes`, `--crop`) is an alias of it.
"""

from absl import flags

from tf_autoseg.training import config as run_config

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
    for field in run_config.fields():
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


def values(names=None):
    """The parsed values of the table's flags by name (of `names`, default: all)."""
    return {
        field.name: flags.FLAGS[field.name].value
        for field in run_config.fields()
        if names is None or field.name in names
    }
