"""Stand-ins for the novel app's objects, built from their documented interface only.

``ChatMessages`` behaves as the app's ``llm_api.chat_messages.ChatMessages`` does toward the collector:
a ``list`` of ``{"role", "content"}`` dicts with a ``model``, a ``cost`` property computed from a price
per thousand tokens, a ``currency_symbol`` property (``'￥'`` for the models priced in yuan, ``'$'``
otherwise), slicing that keeps the model (``messages[:-1]``, ``messages[-1:]``) and
``count_message_tokens()``. The token estimate here is simpler than the app's (one token per two
characters); what the tests check is that the client takes the figures through that interface.
"""

#: model: (yuan or dollars per 1,000 input tokens, per 1,000 output tokens, currency symbol)
PRICES = {
    "glm-4-air": (0.001, 0.001, "￥"),
    "ERNIE-Novel-8K": (0.04, 0.12, "￥"),
    "gpt-4o-mini": (0.00015, 0.0006, "$"),
    "o1-pro": (0.15, 0.6, "$"),
}


class ChatMessages(list):
    def __init__(self, messages=(), model=None):
        super().__init__(messages)
        self.model = model
        self.finished = False

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if isinstance(index, slice):
            return ChatMessages(item, model=self.model)
        return item

    def __add__(self, other):
        if isinstance(other, list):
            return ChatMessages(list.__add__(self, other), model=self.model)
        return NotImplemented

    def count_message_tokens(self):
        return sum(len(m["role"]) + len(m["content"]) for m in self) // 2

    @property
    def cost(self):
        if not self or self.model not in PRICES:
            return 0
        per_input, per_output, _ = PRICES[self.model]
        return (per_input * self[:-1].count_message_tokens() + per_output * self[-1:].count_message_tokens()) / 1000

    @property
    def currency_symbol(self):
        return PRICES[self.model][2] if self.model in PRICES else "$"

    @property
    def response(self):
        return self[-1]["content"] if self and self[-1]["role"] == "assistant" else ""


def conversation(model, prompt, reply):
    """A finished call: the prompt messages and the assistant's reply, as ``stream_chat`` returns it."""
    return ChatMessages([{"role": "system", "content": "你是一位小说作家。"},
                         {"role": "user", "content": prompt},
                         {"role": "assistant", "content": reply}], model=model)
