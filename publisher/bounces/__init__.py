"""The inbound side: bounces, complaints and mailto unsubscribes, read and acted on.

- `verp`: the short signed tokens in the VERP return path and the mailto unsubscribe address;
- `classify`: one failure's kind by its cause (hard, soft, blocked), also used during the send;
- `parse`: what one message is (RFC 3464 DSN, RFC 5965 ARF, auto-reply, flufl.bounce heuristics);
- `intake`: one code path for files, Maildir, mbox, standard input and IMAP (`fetch`);
- the policy and the records are in publisher/state/bounces.py.
"""
