import os
name = "café"
