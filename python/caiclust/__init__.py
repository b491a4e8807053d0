from caiclust._core import __version__
