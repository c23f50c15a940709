//! What is to be routed: depots, clients, vehicle types and the travel matrices.
//!
//! Nodes are numbered depots first (`0..depots.len()`), then clients. Every quantity is an
//! integer in the caller's unit (metres, seconds, grams...): the search compares exactly.

/// Load dimensions: weight, volume, and the chilled share of the weight (a vehicle that is not
/// refrigerated has a chilled capacity of 0, so chilled goods only ride refrigerated ones).
pub const DIMS: usize = 3;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Load(pub [i64; DIMS]);

impl Load {
    pub const ZERO: Load = Load([0; DIMS]);

    pub fn weight(w: i64) -> Load {
        Load([w, 0, 0])
    }

    #[inline]
    pub fn max(self, o: Load) -> Load {
        Load(std::array::from_fn(|d| self.0[d].max(o.0[d])))
    }

    /// Σ over dimensions of what exceeds `capacity`.
    #[inline]
    pub fn excess(self, capacity: Load) -> i64 {
        (0..DIMS).map(|d| (self.0[d] - capacity.0[d]).max(0)).sum()
    }

    pub fn fits(self, capacity: Load) -> bool {
        (0..DIMS).all(|d| self.0[d] <= capacity.0[d])
    }
}

impl std::ops::Add for Load {
    type Output = Load;

    #[inline]
    fn add(self, o: Load) -> Load {
        Load(std::array::from_fn(|d| self.0[d] + o.0[d]))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    /// Unloaded here (carried from the depot).
    pub delivery: Load,
    /// Loaded here (carried back to the depot).
    pub pickup: Load,
    pub service: i64,
    /// Service starts within [early, late].
    pub early: i64,
    pub late: i64,
}

impl Client {
    pub fn new(delivery: Load) -> Client {
        Client { delivery, pickup: Load::ZERO, service: 0, early: 0, late: i64::MAX / 4 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VehicleType {
    /// How many such vehicles there are.
    pub count: usize,
    pub capacity: Load,
    /// The node it leaves from and returns to.
    pub depot: usize,
    /// Its shift: it leaves no earlier than `early` and is back by `late`.
    pub early: i64,
    pub late: i64,
    /// Longest route, start to end (the driver's shift length).
    pub max_duration: i64,
    /// Cost of using it at all.
    pub fixed_cost: i64,
}

impl VehicleType {
    pub fn new(count: usize, capacity: Load, depot: usize) -> VehicleType {
        VehicleType { count, capacity, depot, early: 0, late: i64::MAX / 4, max_duration: i64::MAX / 4, fixed_cost: 0 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub depots: usize,
    pub clients: Vec<Client>,
    pub vehicle_types: Vec<VehicleType>,
    n: usize,
    dist: Vec<i64>,
    time: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProblemError(pub String);

impl std::fmt::Display for ProblemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProblemError {}

impl Problem {
    /// `dist` and `time` are row-major square matrices over every node.
    pub fn new(
        depots: usize,
        clients: Vec<Client>,
        vehicle_types: Vec<VehicleType>,
        dist: Vec<i64>,
        time: Vec<i64>,
    ) -> Result<Problem, ProblemError> {
        let n = depots + clients.len();
        if depots == 0 {
            return Err(ProblemError("at least one depot".into()));
        }
        if dist.len() != n * n || time.len() != n * n {
            return Err(ProblemError(format!("matrices must be {n} × {n}")));
        }
        if vehicle_types.is_empty() || vehicle_types.iter().all(|v| v.count == 0) {
            return Err(ProblemError("at least one vehicle".into()));
        }
        if let Some(v) = vehicle_types.iter().find(|v| v.depot >= depots) {
            return Err(ProblemError(format!("vehicle depot {} is not a depot", v.depot)));
        }
        if dist.iter().chain(&time).any(|x| *x < 0) {
            return Err(ProblemError("distances and times are not negative".into()));
        }
        if let Some((i, _)) = clients.iter().enumerate().find(|(_, c)| c.early > c.late || c.service < 0) {
            return Err(ProblemError(format!("client {}: its window closes before it opens", i + depots)));
        }
        Ok(Problem { depots, clients, vehicle_types, n, dist, time })
    }

    /// Nodes: depots then clients.
    pub fn nodes(&self) -> usize {
        self.n
    }

    #[inline]
    pub fn dist(&self, from: usize, to: usize) -> i64 {
        self.dist[from * self.n + to]
    }

    #[inline]
    pub fn time(&self, from: usize, to: usize) -> i64 {
        self.time[from * self.n + to]
    }

    #[inline]
    pub fn client(&self, node: usize) -> &Client {
        &self.clients[node - self.depots]
    }

    pub fn is_client(&self, node: usize) -> bool {
        node >= self.depots
    }

    pub fn client_nodes(&self) -> std::ops::Range<usize> {
        self.depots..self.n
    }

    pub fn fleet_size(&self) -> usize {
        self.vehicle_types.iter().map(|v| v.count).sum()
    }

    /// The same problem with only the clients `keep` (node ids): the smaller problem, and for
    /// each of its nodes the node it was here.
    pub fn restrict(&self, keep: &[usize]) -> (Problem, Vec<usize>) {
        let nodes: Vec<usize> = (0..self.depots).chain(keep.iter().copied()).collect();
        let n = nodes.len();
        let mut dist = vec![0; n * n];
        let mut time = vec![0; n * n];
        for (i, &a) in nodes.iter().enumerate() {
            for (j, &b) in nodes.iter().enumerate() {
                dist[i * n + j] = self.dist(a, b);
                time[i * n + j] = self.time(a, b);
            }
        }
        let clients = keep.iter().map(|&c| self.client(c).clone()).collect();
        let problem =
            Problem { depots: self.depots, clients, vehicle_types: self.vehicle_types.clone(), n, dist, time };
        (problem, nodes)
    }
}
