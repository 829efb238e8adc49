
  const $ = (role) => root.querySelector('[data-role="' + role + '"]');

  function loadPlotly() {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    return new Promise(function (resolve, reject) {
      const s = document.createElement("script");
      s.src = cfg.plotly;
      s.onload = function () { resolve(window.Plotly); };
      s.onerror = function () { reject(new Error("could not load plotly.js from " + cfg.plotly)); };
      document.head.appendChild(s);
    });
  }
  async function invoke(name, args) {
    const result = await google.colab.kernel.invokeFunction(name, args, {});
    return result.data["application/json"];
  }
  function message(html) { $("message").innerHTML = html; }
  function escapeHtml(t) { const d = document.createElement("div"); d.textContent = String(t); return d.innerHTML; }

  // pairs: [payload, trace index]; "replace" sets the whole trace, "extend" points go in one extendTraces
  function applySeries(Plotly, plot, pairs) {
    const extend = {x: [], y: []}, extendIdx = [];
    for (const [s, idx] of pairs) {
      if (s.mode === "replace") {
        Plotly.restyle(plot, {x: [s.x], y: [s.y]}, [idx]);
      } else if (s.x.length) {
        extend.x.push(s.x); extend.y.push(s.y); extendIdx.push(idx);
      }
    }
    if (extendIdx.length) Plotly.extendTraces(plot, extend, extendIdx);
  }

  function wireStop(button, busyText, args) {
    button.addEventListener("click", async function () {
      button.disabled = true;
      button.textContent = busyText;
      try { await invoke(cfg.stop, args); } catch (err) { message("Stop failed: " + escapeHtml(err)); }
    });
  }
  function wireLogScale(plot) {
    const box = $("log");
    box.checked = !!cfg.log_scale;
    box.addEventListener("change", function () {
      if (window.Plotly) window.Plotly.relayout(plot, {"yaxis.type": box.checked ? "log" : "linear"});
    });
  }

  // draw cfg.figure, then poll: apply(Plotly, answer) after each answer, until an answer says done
  function start(plot, apply) {
    let cursor = null, failures = 0;
    async function tick(Plotly) {
      let next = cfg.interval_ms;
      try {
        const p = await invoke(cfg.poll, [cursor]);
        apply(Plotly, p);
        cursor = p.cursor;
        failures = 0;
        if (p.done) return;
        next = p.interval_ms || next;
      } catch (err) {
        failures += 1;
        if (failures >= 5) {
          message('<div style="color:#b00020">Lost contact with the kernel (' + escapeHtml(err) + "). " +
                  escapeHtml(cfg.lost_hint) + "</div>");
          return;
        }
        next = cfg.interval_ms * (1 + failures);
      }
      setTimeout(function () { tick(Plotly); }, next);
    }
    loadPlotly().then(function (Plotly) {
      const layout = Object.assign({}, cfg.figure.layout, {autosize: true});
      delete layout.height;
      return Plotly.newPlot(plot, cfg.figure.data, layout, {displaylogo: false, responsive: true})
        .then(function () { tick(Plotly); });
    }).catch(function (err) { message('<div style="color:#b00020">' + escapeHtml(err) + "</div>"); });
  }
