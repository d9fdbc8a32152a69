"""What goes beyond the exercise of vae_mnist.ipynb, and the machinery around it.

The exercise's own code (the model, its data and its training) lives in the graded notebook and is reached through
`vae_mnist.notebook`; the modules here measure, study and run it.
"""

import warnings

# In a Jupyter kernel without ipywidgets (papermill) tqdm draws text bars; its warning about that is noise.
warnings.filterwarnings("ignore", message="IProgress not found")
