"""The inbound side: bounces, complaints and mailto unsubscribes, read and acted on.

- `parse`: what one message is (RFC 3464 DSN, RFC 5965 ARF, auto-reply, flufl.bounce heuristics);
- `intake`: one code path for files, Maildir, mbox, standard input and IMAP (`fetch`);
- the policy and the records are in publisher/state/bounces.py; the classifier of causes and
  the VERP and mailto tokens, which the send uses too, in publisher/mailrules.py.
"""
