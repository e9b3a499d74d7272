"""Classification metrics the recipes write: accuracy, confusion matrix and its plot, parameter counts.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch

# The format of the recipes' metrics.json (read by speechbrain_mambadapter.results).
METRICS_VERSION = 1


def accuracy(predictions, targets):
    """Share of ``predictions`` equal to ``targets`` (0.0 for empty inputs).

    Arguments
    ---------
    predictions, targets : torch.Tensor
        ``[N]`` class indices.

    Returns
    -------
    float

    Example
    -------
    >>> accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    0.75
    """
    if targets.numel() == 0:
        return 0.0
    return (predictions == targets).float().mean().item()


def confusion_matrix(predictions, targets, n_classes):
    """``[n_classes, n_classes]`` counts; row = true class, column = predicted class.

    Arguments
    ---------
    predictions, targets : torch.Tensor
        ``[N]`` class indices below ``n_classes``.
    n_classes : int
        Number of classes.

    Returns
    -------
    torch.Tensor
        ``[n_classes, n_classes]`` int64.

    Example
    -------
    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2).tolist()
    [[1, 1], [0, 1]]
    """
    flat = targets.long() * n_classes + predictions.long()
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_accuracy(matrix, classes):
    """``{class: recall}`` from a confusion matrix; classes absent from the data map to None.

    Arguments
    ---------
    matrix : torch.Tensor
        ``confusion_matrix`` output.
    classes : list of str
        Class names, in index order.

    Returns
    -------
    dict

    Example
    -------
    >>> per_class_accuracy(torch.tensor([[1, 1], [0, 0]]), ["dog", "cat"])
    {'dog': 0.5, 'cat': None}
    """
    totals = matrix.sum(dim=1)
    return {
        name: (matrix[i, i].item() / totals[i].item() if totals[i] > 0 else None)
        for i, name in enumerate(classes)
    }


def plot_confusion_matrix(matrix, classes, path, title):
    """Save a row-normalised confusion matrix as a PNG (matplotlib, Agg backend).

    Arguments
    ---------
    matrix : torch.Tensor
        ``confusion_matrix`` output.
    classes : list of str
        Class names (axis labels).
    path : str
        Output PNG file.
    title : str
        Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.float()
    normalised = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.22 * len(classes) + 2.0)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
    ax.set_yticks(range(len(classes)), classes, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def count_parameters(module, trainable=True):
    """Parameters of ``module`` (only trainable ones by default), shared tensors counted once.

    Example
    -------
    >>> layer = torch.nn.Linear(3, 2)
    >>> _ = layer.bias.requires_grad_(False)
    >>> count_parameters(layer), count_parameters(layer, trainable=False)
    (6, 8)
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)
