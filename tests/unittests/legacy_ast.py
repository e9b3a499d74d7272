"""The transformers 4.x layout of ``ASTModel``, rebuilt for the tests.

transformers 4.x nests AST as ``encoder.layer[i]`` with ``attention.attention.query/key/value``,
``attention.output.dense``, ``intermediate.dense`` and ``output.dense`` (whose forward adds the
residual). The installed transformers 5.x has another layout, so this file reproduces the 4.x
modules' structure and forward (names, call signatures and tuple outputs as in
``modeling_audio_spectrogram_transformer.py`` of transformers 4.46) on top of a 5.x
``ASTModel``, which keeps ``isinstance(model, ASTModel)`` true as for a real 4.x model.
"""

import math

import torch
import torch.nn as nn
from transformers import ASTModel


class ASTSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def transpose_for_scores(self, x):
        shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(shape).permute(0, 2, 1, 3)

    def forward(self, hidden_states, head_mask=None, output_attentions=False):
        query = self.transpose_for_scores(self.query(hidden_states))
        key = self.transpose_for_scores(self.key(hidden_states))
        value = self.transpose_for_scores(self.value(hidden_states))
        scores = query @ key.transpose(-1, -2) / math.sqrt(self.attention_head_size)
        probs = self.dropout(scores.softmax(dim=-1))
        if head_mask is not None:
            probs = probs * head_mask
        context = (probs @ value).permute(0, 2, 1, 3).contiguous()
        context = context.view(context.size()[:-2] + (-1,))
        return (context, probs) if output_attentions else (context,)


class ASTSelfOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.dropout(self.dense(hidden_states))


class ASTAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = ASTSelfAttention(config)
        self.output = ASTSelfOutput(config)

    def forward(self, hidden_states, head_mask=None, output_attentions=False):
        self_outputs = self.attention(hidden_states, head_mask, output_attentions)
        return (self.output(self_outputs[0], hidden_states),) + self_outputs[1:]


class ASTIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = nn.GELU()

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class ASTOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.dropout(self.dense(hidden_states)) + input_tensor


class ASTLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = ASTAttention(config)
        self.intermediate = ASTIntermediate(config)
        self.output = ASTOutput(config)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, head_mask=None, output_attentions=False):
        normed = self.layernorm_before(hidden_states)
        outputs = self.attention(normed, head_mask, output_attentions=output_attentions)
        hidden_states = outputs[0] + hidden_states
        layer_output = self.intermediate(self.layernorm_after(hidden_states))
        return (self.output(layer_output, hidden_states),) + outputs[1:]


class ASTEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([ASTLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states):
        for layer in self.layer:
            hidden_states = layer(hidden_states, None, False)[0]
        return hidden_states


class LegacyASTModel(ASTModel):
    """``ASTModel`` with the 4.x encoder; ``forward`` returns the last hidden state."""

    def __init__(self, config):
        super().__init__(config)
        del self.layers
        self.encoder = ASTEncoder(config)

    def forward(self, input_values):
        return self.layernorm(self.encoder(self.embeddings(input_values)))


def build_legacy_ast(config):
    """A ``LegacyASTModel`` with random weights everywhere (embeddings included)."""
    model = LegacyASTModel(config)
    with torch.no_grad():
        for module in model.encoder.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(std=0.2)
                module.bias.normal_(std=0.1)
        for p in model.embeddings.parameters():
            p.normal_(std=0.5)
    return model.eval()
