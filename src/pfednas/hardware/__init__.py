"""The clients' hardware: a simulation's seeded spread (:mod:`spread`), each client's profile
and the one budget check (:mod:`profile`), and the simulated time of a round on the profiles
(:mod:`simulated_time`). No torch here."""
