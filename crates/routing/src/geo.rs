//! Distances and times from positions when no road network is at hand: the great-circle
//! distance times a detour factor (roads are not straight), at an average speed.

/// Metres between two (latitude, longitude) points in degrees (haversine, mean Earth radius).
pub fn great_circle_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    const R: f64 = 6_371_008.8;
    let (la1, lo1, la2, lo2) = (a.0.to_radians(), a.1.to_radians(), b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2) + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * R * h.sqrt().asin()
}

/// Road metres and seconds between every pair of points (row-major): great-circle distance ×
/// `detour`, driven at `speed_kmh`.
pub fn matrices(points: &[(f64, f64)], detour: f64, speed_kmh: f64) -> (Vec<i64>, Vec<i64>) {
    let n = points.len();
    let mut dist = vec![0; n * n];
    let mut time = vec![0; n * n];
    let metres_per_second = speed_kmh / 3.6;
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let d = great_circle_m(points[i], points[j]) * detour;
                dist[i * n + j] = d.round() as i64;
                time[i * n + j] = (d / metres_per_second).round() as i64;
            }
        }
    }
    (dist, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lyon_to_villeurbanne_is_a_few_kilometres_by_road() {
        let bellecour = (45.7578, 4.8320);
        let villeurbanne = (45.7719, 4.8902);
        let d = great_circle_m(bellecour, villeurbanne);
        assert!((4_600.0..4_900.0).contains(&d), "{d}");
        let (dist, time) = matrices(&[bellecour, villeurbanne], 1.3, 30.0);
        assert_eq!(dist[1], (d * 1.3).round() as i64);
        assert_eq!(time[1], (d * 1.3 / (30.0 / 3.6)).round() as i64, "seconds at 30 km/h");
        assert_eq!((dist[0], time[3]), (0, 0));
    }
}
