"""Datasets shared by the step benchmarks."""
import torch


class ListDataset(torch.utils.data.Dataset):
    """Samples held in a list (already rendered or built), served as they are."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]
