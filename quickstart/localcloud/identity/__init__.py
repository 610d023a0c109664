"""Identity: the AAD token endpoint, the bearer tokens it signs, and the development credentials.

The other surfaces only ask "is this bearer token ours and current?" (``bearer_tokens``); the
token endpoint is the one place that hands tokens out.
"""
