// test_graph.c - influence, pruning and graph scores on a small hand-made graph whose answers
// are worked out by hand below, plus Cantor numbers and node ids.
//
// Layout (L = 1, T = 2, S = 3 features, K = 1 logit): f0 = 0, f1 = 1, f2 = 2, error (0, 0) = 3,
// error (0, 1) = 4, token 0 = 5, token 1 = 6, logit = 7 (weight 1).
// Edges (target <- source: weight):
//   logit <- f0: 6, f1: 2, e01: 2     normalised .6 .2 .2
//   f0    <- tok1: 3, f2: 1           .75 .25
//   f1    <- tok1: 1, tok0: -1        .5 .5
//   f2    <- tok0: 4                  1
// Influence w An + w An^2 + ...: f0 .6, f1 .2, e01 .2, tok1 .45 + .1 = .55, f2 .15, tok0 .1 + .15 = .25.
// Node threshold 0.8: sorted .6 .55 .25 .2 .2 .15 0 0 (total 1.95); cumulative .308 .590 .718 .821
// -> threshold .2: f2 and e00 are dropped.
// Edge scores on the kept graph (f2 gone, f0 <- tok1 alone = 1): influence f0 .6, f1 .2, e01 .2,
// tok1 .7, tok0 .1; scores logit row (.6 .2 .2) x 1, f0 row 1 x .6, f1 row (.5 .5) x .2
// = .6 .2 .2 .6 .1 .1 (total 1.8), sorted cumulative .333 .667 .778 .889 .944 1.
//   edge threshold .98 -> .1: every edge kept; nodes f0 f1 e01 tok0 tok1 logit.
//   edge threshold .85 -> .2: f1 loses its inputs, so f1 goes, then logit <- f1 goes;
//   nodes f0 e01 tok0 tok1 logit, edges logit <- f0, logit <- e01, f0 <- tok1.
// Cumulative rank fractions: f0 .6/1.95, tok1 1.15/1.95, tok0 1.4/1.95, f1 1.6/1.95 (tie with e01,
// lower index first), e01 1.8/1.95, f2 1.95/1.95, e00 and logit 1.
// Scores, full graph: replacement (.25 + .55) / (.8 + .2) = .8; completeness: only the logit row
// reads an error (.2), weights inf + w total 2.95 -> (2.95 - .2) / 2.95.
// Pruned at (.8, .98): f2 merges into e01 (f0 <- e01: 1): influence f0 .6, f1 .2,
// e01 .2 + .15 = .35, tok1 .55, tok0 .1 -> replacement .65 / 1 = .65; completeness: logit .2
// error share, f0 .25 -> (2.8 - .2 - .25 * .6) / 2.8 = .875.
#include <math.h>
#include <string.h>

#include "check.h"
#include "trace/graph.h"

static ct_graph *hand_graph(void) {
    ct_graph *g = calloc(1, sizeof *g);
    g->n_pos = 2, g->n_layers = 1, g->d_model = 4, g->vocab_size = 10;
    g->tokens = malloc(2 * sizeof(int));
    g->tokens[0] = 1, g->tokens[1] = 7;
    g->prompt = strdup("ab");
    g->n_active = g->n_selected = 3;
    g->active = malloc(9 * sizeof(int32_t));
    int32_t act[9] = {0, 1, 5, 0, 1, 7, 0, 1, 9};
    memcpy(g->active, act, sizeof act);
    g->activation = malloc(3 * sizeof(float));
    g->activation[0] = 1, g->activation[1] = 2, g->activation[2] = 3;
    g->selected = malloc(3 * sizeof(int64_t));
    for (int i = 0; i < 3; i++) g->selected[i] = i;
    g->n_logits = 1;
    g->logits = calloc(1, sizeof(ct_logit_target));
    g->logits[0] = (ct_logit_target){4, 1.0f, strdup("x"), NULL};
    g->n_nodes = 8;
    g->adj = calloc(4 * 8, sizeof(float));   // rows of f0, f1, f2 and the logit
#define E(t, s, w) g->adj[((t) == 7 ? 3 : (t)) * 8 + (s)] = (w)
    E(7, 0, 6), E(7, 1, 2), E(7, 4, 2);
    E(0, 6, 3), E(0, 2, 1);
    E(1, 6, 1), E(1, 5, -1);
    E(2, 5, 4);
#undef E
    g->settings.node_threshold = g->settings.edge_threshold = -1;
    return g;
}

static int near(double a, double b) { return fabs(a - b) < 1e-6; }

int main(void) {
    ct_err err = {0};
    ct_graph *g = hand_graph();
    double inf[8];
    ok(ct_graph_influence(g, inf, &err) == CT_OK, "influence");
    double want[8] = {.6, .2, .15, 0, .2, .25, .55, 0};
    int good = 1;
    for (int i = 0; i < 8; i++) good &= near(inf[i], want[i]);
    ok(good, "influence matches the hand computation (f0 %.3f f1 %.3f f2 %.3f e01 %.3f tok0 %.3f tok1 %.3f)", inf[0], inf[1],
       inf[2], inf[4], inf[5], inf[6]);

    double r, c;
    ok(ct_graph_scores(g, &r, &c, &err) == CT_OK && near(r, 0.8) && near(c, 2.75 / 2.95),
       "full graph scores: replacement %.6f (0.8), completeness %.6f (%.6f)", r, c, 2.75 / 2.95);

    ct_graph *p = NULL;
    ok(ct_graph_prune(&p, g, 0.8, 0.98, &err) == CT_OK, "prune 0.8 / 0.98");
    uint8_t mask98[8] = {1, 1, 0, 0, 1, 1, 1, 1};
    ok(p && memcmp(p->node_mask, mask98, 8) == 0, "edge threshold 0.98: f2 and e00 dropped, the rest kept");
    int n_edges = 0;
    for (int k = 0; p && k < 32; k++) n_edges += p->adj[k] != 0.0f;
    ok(p && n_edges == 6 && ct_graph_weight(p, 7, 0) == 6 && ct_graph_weight(p, 1, 5) == -1, "edge threshold 0.98: the six edges among kept nodes, weights unchanged");
    float cum[8] = {.6f / 1.95f, 1.6f / 1.95f, 1.0f, 1.0f, 1.8f / 1.95f, 1.4f / 1.95f, 1.15f / 1.95f, 1.0f};
    good = p != NULL;
    for (int i = 0; p && i < 8; i++) good &= fabs(p->node_influence[i] - cum[i]) < 1e-6;
    ok(good, "cumulative influence rank fractions (ties by node index)");
    ok(p && near(p->scores[0], 0.65) && near(p->scores[1], 0.875),
       "pruned scores (dropped features merged into their error node): replacement %.6f (0.65), completeness %.6f (0.875)",
       p ? p->scores[0] : -1, p ? p->scores[1] : -1);
    ct_graph_free(p);

    ok(ct_graph_prune(&p, g, 0.8, 0.85, &err) == CT_OK, "prune 0.8 / 0.85");
    uint8_t mask85[8] = {1, 0, 0, 0, 1, 1, 1, 1};
    ok(p && memcmp(p->node_mask, mask85, 8) == 0, "edge threshold 0.85: f1 loses its inputs and goes; tokens and logit stay");
    n_edges = 0;
    for (int k = 0; p && k < 32; k++) n_edges += p->adj[k] != 0.0f;
    ok(p && n_edges == 3 && ct_graph_weight(p, 7, 0) == 6 && ct_graph_weight(p, 7, 4) == 2 && ct_graph_weight(p, 0, 6) == 3,
       "edge threshold 0.85: logit <- f0, logit <- e01, f0 <- tok1");
    ct_graph_free(p);

    // thresholds 1 and 0: everything with influence, or only the most influential node
    ok(ct_graph_prune(&p, g, 1.0, 1.0, &err) == CT_OK && p->node_mask[2] && p->node_mask[0], "prune 1 / 1 keeps f2");
    ct_graph_free(p);
    ok(ct_graph_prune(&p, g, 0.0, 0.98, &err) == CT_OK && p->node_mask[0] && !p->node_mask[1] && !p->node_mask[4] &&
           p->node_mask[5] && p->node_mask[6] && p->node_mask[7],
       "node threshold 0 keeps the most influential feature, tokens and logits");
    ct_graph_free(p);
    ok(ct_graph_prune(&p, g, 1.5, 0.9, &err) == CT_STATUS_BAD_ARG && strstr(err.msg, "node_threshold"), "node_threshold 1.5: %s", err.msg);
    ok(ct_graph_prune(&p, g, 0.5, -0.1, &err) == CT_STATUS_BAD_ARG && strstr(err.msg, "edge_threshold"), "edge_threshold -0.1: %s", err.msg);
    ok(ct_graph_prune(&p, g, NAN, 0.9, &err) == CT_STATUS_BAD_ARG, "node_threshold NaN: %s", err.msg);

    // node ids and Cantor numbers (formats.md: (20, 15589) -> 121843834, (0, 1285) -> 827540)
    ok(ct_cantor(20, 15589) == 121843834 && ct_cantor(0, 1285) == 827540 && ct_cantor(25, 131071) > 8589000000LL,
       "Cantor numbers");
    char id[64];
    ct_graph_node_id(g, 1, id, sizeof id);
    ok(strcmp(id, "0_7_1") == 0 && ct_graph_find_node_id(g, id) == 1, "feature node id %s", id);
    ct_graph_node_id(g, 3, id, sizeof id);
    ok(strcmp(id, "0_-1_0") == 0 && ct_graph_find_node_id(g, id) == 3, "error node id %s", id);
    ct_graph_node_id(g, 6, id, sizeof id);
    ok(strcmp(id, "E_7_1") == 0 && ct_graph_find_node_id(g, id) == 6, "token node id %s", id);
    ct_graph_node_id(g, 7, id, sizeof id);
    ok(strcmp(id, "2_4_1") == 0 && ct_graph_find_node_id(g, id) == 7, "logit node id %s", id);
    ok(ct_graph_find_node_id(g, "0_8_1") == -1 && ct_graph_find_node_id(g, "E_3_1") == -1 && ct_graph_find_node_id(g, "x") == -1,
       "unknown node ids are not found");

    // a cycle never converges: a clear error instead of a hang
    g->adj[2 * 8 + 7] = 1000;   // f2 <- logit: a cycle that decays slowly
    ok(ct_graph_influence(g, inf, &err) == CT_STATUS_BAD_ARG && strstr(err.msg, "cycle"), "cycle: %s", err.msg);
    ct_graph_free(g);
    return check_done();
}
