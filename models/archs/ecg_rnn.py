"""Beat CNN + BiLSTM for ECG rhythm.

Input (N, T, L + F + 1): T beats, each L samples of normalised waveform around its R peak,
F RR-interval features, and a validity mask. A 1-D CNN embeds each beat; a bidirectional LSTM
reads the beat sequence (with the RR features); a linear head scores every beat and the
masked mean of those scores is the window's logits, so per-beat scores (a CAM along time)
come out of the same graph. Initial LSTM states are fixed zeros, so the batch size is free.
"""
from __future__ import annotations

import torch
from torch import nn


class BeatCNNLSTM(nn.Module):
    def __init__(self, beat_samples: int = 160, rr_features: int = 5, num_classes: int = 4,
                 width: int = 32, hidden: int = 48, dropout: float = 0.2):
        super().__init__()
        self.beat_samples, self.rr_features = beat_samples, rr_features
        self.cnn = nn.Sequential(
            nn.Conv1d(1, 16, 7, padding=3, bias=False), nn.BatchNorm1d(16), nn.ReLU(inplace=True), nn.MaxPool1d(2),
            nn.Conv1d(16, 24, 5, padding=2, bias=False), nn.BatchNorm1d(24), nn.ReLU(inplace=True), nn.MaxPool1d(2),
            nn.Conv1d(24, width, 3, padding=1, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool1d(1))
        self.lstm = nn.LSTM(width + rr_features, hidden, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden, num_classes)

    def forward_with_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t, _ = x.shape
        beats = x[..., :self.beat_samples].reshape(n * t, 1, self.beat_samples)
        rr = x[..., self.beat_samples:self.beat_samples + self.rr_features]
        mask = x[..., -1:]
        emb = self.cnn(beats).reshape(n, t, -1)
        seq, _ = self.lstm(torch.cat([emb, rr], dim=-1))
        beat_logits = self.head(self.drop(seq))  # (N, T, C)
        logits = (beat_logits * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return logits, beat_logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_cam(x)[0]
