//! A layout as an agent reads it: clusters with members, not tens of thousands of points.

use serde_json::{json, Value};
use tensor_surgeon_wire::Projection;

/// Members listed per cluster.
const CLUSTER_MEMBERS: usize = 12;

/// A layout as an agent reads it: what was laid out, its clusters (k-means on the layout,
/// largest first, with their first members and tokens) and, when asked, the first points.
pub(super) fn summarise(p: &Projection, tensor: &str, k: usize, points: usize) -> Value {
    let dims = p.dims.max(1) as usize;
    let labels = tensor_surgeon_core::cluster::kmeans(&p.points, dims, k.clamp(1, 64));
    let member = |i: usize| json!({"row": p.index[i], "token": p.labels.get(i)});
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        let l = l as usize;
        if groups.len() <= l {
            groups.resize(l + 1, Vec::new());
        }
        groups[l].push(i);
    }
    groups.retain(|g| !g.is_empty());
    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
    let clusters: Vec<Value> = groups
        .iter()
        .map(|g| {
            let centre: Vec<f32> = (0..dims)
                .map(|c| g.iter().map(|&i| p.points[i * dims + c]).sum::<f32>() / g.len() as f32)
                .collect();
            json!({
                "size": g.len(),
                "centre": centre,
                "members": g.iter().take(CLUSTER_MEMBERS).map(|&i| member(i)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let listed: Vec<Value> = (0..points.min(p.n as usize))
        .map(|i| json!({"row": p.index[i], "token": p.labels.get(i), "at": &p.points[i * dims..(i + 1) * dims]}))
        .collect();
    json!({
        "tensor": tensor,
        "method": p.method,
        "n": p.n,
        "dims": p.dims,
        "iterations": p.iterations,
        "loss": p.loss,
        "explained_ratio": p.explained_ratio,
        "clusters": clusters,
        "points": listed,
    })
}
