"""What travels between the server and its clients, and how a reply is judged: each array's
role (:mod:`roles`), the checks of a reply's metrics and arrays (:mod:`validation`), an
architecture as one integer (:mod:`archcode`). No torch in the checks."""
