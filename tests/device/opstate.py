# opstate: fresh unix-board state folders for the operation tests.
import os
import random

from jobs.store import rmtree


def fresh_dir(tag="ops"):
    path = "/tmp/mptest-" + tag + "-" + str(random.getrandbits(30))
    rmtree(path)
    os.mkdir(path)
    return path


def fresh_board(**settings):
    """A unix Board on a new, empty state folder (a first power-on); settings: board_* keys."""
    import board

    config = {"board_state_dir": fresh_dir()}
    for key in settings:
        config["board_" + key] = settings[key]
    return board.Board(config)


def pin_log(b):
    try:
        with open(b.root + "/simboard/pins.log") as f:
            return f.read()
    except OSError:
        return ""


def boot_again(b, **settings):
    """A reset: the same state folder, the boot selection run again (in this process)."""
    import board

    board._booted = None
    config = {"board_state_dir": b.root}
    for key in settings:
        config["board_" + key] = settings[key]
    return board.Board(config)
