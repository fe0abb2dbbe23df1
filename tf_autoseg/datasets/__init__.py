"""One module per dataset (synthetic, folder, dubai, camvid, potsdam, cocostuff): each owns
how its files are found, read, labelled and cut, in memory and streamed."""

# The datasets the programs take by name (`--dataset`); `synthetic` is generated, not prepared.
NAMES = ("synthetic", "potsdam", "cocostuff", "folder", "dubai", "camvid")
PREPARED = tuple(name for name in NAMES if name != "synthetic")
