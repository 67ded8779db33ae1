// Starts Swagger UI on /docs with the bundle this app serves (no CDN, no inline script: the page's
// Content-Security-Policy allows scripts from this origin only). The schema's URL comes from the page.
// Mirrors FastAPI's default Swagger UI settings; the online validator badge is off (it would call out).

const container = document.getElementById("swagger-ui");
window.ui = window.SwaggerUIBundle({
  url: container.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset],
});
